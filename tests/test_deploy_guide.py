"""docs/deploy.md works as written: its `sh` blocks run in order, in one shell, and the first failing
command fails the test.

* ``sh``: run as is (nitrodeck on the emulator: no Nitro device here);
* ``sh aws``: run with ``AWS_ENDPOINT_URL`` pointing at a real moto server on 127.0.0.1;
* ``sh real-aws-only``: not runnable here (a Nitro instance, SSM, the Amazon Linux base image): its
  shell syntax is checked with ``bash -n``, every ``nitrodeck`` command line in it must parse, and
  every ``aws`` command line must name a real service, operation (or waiter) and options, with the
  operation's required ones (botocore's models);
* ``sh rehearsal``: the emulator's stand-in for the real-only block before it; run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from console.cli import build_parser
from tests.conftest import REPO, kill_world, require

GUIDE = REPO / "docs" / "deploy.md"
KINDS = ("sh", "sh aws", "sh real-aws-only", "sh rehearsal")
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.M | re.S)
_SHELL_OPS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>&1"}


@dataclass(frozen=True)
class Block:
    kind: str
    line: int
    text: str


def guide_blocks(text: str) -> list[Block]:
    """The fenced shell blocks in order (other fences, e.g. the diagram, have no ``sh`` info string)."""
    out = []
    for m in _FENCE.finditer(text):
        info = " ".join(m.group(1).split())
        if info == "sh" or info.startswith("sh "):
            out.append(Block(info, text.count("\n", 0, m.start()) + 1, m.group(2)))
    return out


def _substitutions(line: str) -> tuple[str, list[str]]:
    """The line with each ``$(...)`` replaced by a word, and the command lines inside them (nested too)."""
    out: list[str] = []
    inner: list[str] = []
    i = 0
    while (start := line.find("$(", i)) >= 0:
        depth, j = 1, start + 2
        while j < len(line) and depth:
            depth += {"(": 1, ")": -1}.get(line[j], 0)
            j += 1
        out.append(line[i:start] + "SUBST")
        body, nested = _substitutions(line[start + 2 : j - 1])
        inner += [body, *nested]
        i = j
    out.append(line[i:])
    return "".join(out), inner


def command_argvs(script: str, name: str) -> list[list[str]]:
    """Every ``name ...`` invocation in a block: also inside ``$(...)`` and quoted ``--command "name ..."``."""
    argvs: list[list[str]] = []
    for logical in script.replace("\\\n", " ").splitlines():
        logical = logical.split(" # ")[0] if not logical.lstrip().startswith("#") else ""
        outer, inner = _substitutions(logical)
        for line in (outer, *inner):
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError as exc:
                raise AssertionError(f"unbalanced quotes in {line!r}") from exc
            expanded: list[str] = []
            for tok in tokens:
                expanded += [";", *tok.split()] if tok.startswith(f"{name} ") else [tok]
            for i, tok in enumerate(expanded):
                # a command, not an argument (`--cluster nitrodeck`): first, or after sudo, VAR=x or an operator
                before = expanded[i - 1] if i else None
                at_command = before is None or before in ("sudo", *_SHELL_OPS) or (
                    "=" in before and not before.startswith("-")
                )
                if tok == name and at_command:
                    argv = []
                    for t in expanded[i + 1 :]:
                        if t in _SHELL_OPS:
                            break
                        argv.append(t)
                    argvs.append(argv)
    return argvs


def nitrodeck_argvs(script: str) -> list[list[str]]:
    return command_argvs(script, "nitrodeck")


#: the AWS CLI's own options, valid on every command
AWS_GLOBAL_OPTIONS = frozenset({
    "--query", "--output", "--region", "--profile", "--endpoint-url", "--no-cli-pager", "--cli-input-json",
    "--debug", "--no-paginate", "--page-size", "--max-items", "--starting-token", "--color", "--no-verify-ssl",
    "--cli-binary-format",
})
#: commands the AWS CLI adds beyond the API (its customizations), with their options
AWS_CUSTOM_COMMANDS = {
    ("ecr", "get-login-password"): frozenset(),
    ("logs", "tail"): frozenset({"--since", "--follow", "--format", "--filter-pattern", "--log-stream-names",
                                 "--log-stream-name-prefix"}),
}


def aws_problem(argv: list[str]) -> str | None:
    """Why ``aws ARGV`` is not a command the AWS CLI knows (service, operation or waiter, option names, the
    operation's required options), read from botocore's service models; None when it is."""
    import botocore.session
    from botocore import xform_name

    if len(argv) < 2:
        return "no service and operation"
    service, op, rest = argv[0], argv[1], argv[2:]
    options = {t.split("=", 1)[0] for t in rest if t.startswith("--")}
    if (service, op) in AWS_CUSTOM_COMMANDS:
        unknown = options - AWS_CUSTOM_COMMANDS[(service, op)] - AWS_GLOBAL_OPTIONS
        return f"unknown option(s) {sorted(unknown)}" if unknown else None
    session = botocore.session.get_session()
    if service not in session.get_available_services():
        return f"no AWS service {service!r}"
    model = session.get_service_model(service)
    if op == "wait":
        waiters = session.get_waiter_model(service)
        names = {xform_name(n, "-"): n for n in waiters.waiter_names}
        if not rest or rest[0] not in names:
            return f"no waiter {rest[0] if rest else ''!r} in {service} ({', '.join(sorted(names))})"
        operation = model.operation_model(waiters.get_waiter(names[rest[0]]).operation)
    else:
        ops = {xform_name(n, "-"): n for n in model.operation_names}
        if op not in ops:
            return f"no operation {op!r} in {service}"
        operation = model.operation_model(ops[op])
    shape = operation.input_shape
    members = shape.members if shape is not None else {}
    allowed = {f"--{xform_name(m, '-')}" for m in members}
    allowed |= {f"--no-{xform_name(m, '-')}" for m, s in members.items() if s.type_name == "boolean"}
    unknown = options - allowed - AWS_GLOBAL_OPTIONS
    if unknown:
        return f"unknown option(s) {sorted(unknown)} for {service} {op}"
    required = {xform_name(m, "-") for m in (shape.required_members if shape is not None else [])}
    missing = sorted(r for r in required if f"--{r}" not in options and f"--no-{r}" not in options)
    if missing and "--cli-input-json" not in options:
        return f"{service} {op} needs --{', --'.join(missing)}"
    return None


def test_guide_blocks_are_all_known_kinds() -> None:
    blocks = guide_blocks(GUIDE.read_text())
    assert blocks, "no sh blocks found"
    assert {b.kind for b in blocks} <= set(KINDS), {b.kind for b in blocks}
    assert {"sh", "sh aws", "sh real-aws-only", "sh rehearsal"} == {b.kind for b in blocks}
    # every rehearsal stands in for the real-only block just before it
    for before, block in zip(blocks, blocks[1:], strict=False):
        if block.kind == "sh rehearsal":
            assert before.kind == "sh real-aws-only", f"rehearsal at line {block.line} follows a {before.kind} block"


def test_real_only_blocks_are_valid_shell_and_nitrodeck_commands() -> None:
    parser = build_parser()
    checked = aws_checked = 0
    for block in guide_blocks(GUIDE.read_text()):
        if block.kind != "sh real-aws-only":
            continue
        syntax = subprocess.run(["bash", "-n"], input=block.text, capture_output=True, text=True, timeout=30)
        assert syntax.returncode == 0, f"line {block.line}: {syntax.stderr}"
        for argv in nitrodeck_argvs(block.text):
            try:
                parser.parse_args(argv)
            except SystemExit as exc:
                raise AssertionError(f"line {block.line}: `nitrodeck {' '.join(argv)}` does not parse") from exc
            checked += 1
        for argv in command_argvs(block.text, "aws"):
            problem = aws_problem(argv)
            assert problem is None, f"line {block.line}: `aws {' '.join(argv)}`: {problem}"
            aws_checked += 1
    assert checked >= 4  # doctor, the TUI, status, sign
    assert aws_checked >= 10  # the ECR login, ECS wait and exec, logs, EC2, SSM, Secrets Manager, CloudFormation


def test_nitrodeck_argv_extraction() -> None:
    script = 'sudo nitrodeck --backend real doctor --fix-hints\naws ecs execute-command \\\n  --command "nitrodeck status" | cat\n'
    assert nitrodeck_argvs(script) == [["--backend", "real", "doctor", "--fix-hints"], ["status"]]


def test_aws_argv_extraction_and_checks() -> None:
    script = (
        'HOST=$(aws ec2 describe-instances --filters Name=x,Values=y \\\n  --query "R[0]" --output text)\n'
        'aws secretsmanager get-secret-value --secret-id "$(aws cloudformation describe-stacks --stack-name n '
        '--query "S[0]" --output text)" --query SecretString --output text > t\n'
    )
    argvs = command_argvs(script, "aws")
    assert [a[:2] for a in argvs] == [["ec2", "describe-instances"], ["secretsmanager", "get-secret-value"],
                                      ["cloudformation", "describe-stacks"]]
    assert all(aws_problem(a) is None for a in argvs)
    # each of these is wrong as written, the way a guide's command goes wrong
    assert "no waiter 'service-stable'" in str(aws_problem(["ecs", "wait", "service-stable", "--services", "s"]))
    assert "no operation 'list-task'" in str(aws_problem(["ecs", "list-task"]))
    assert "unknown option(s) ['--service']" in str(aws_problem(["ecs", "list-tasks", "--service", "signer"]))
    assert "needs --command, --interactive" in str(aws_problem(["ecs", "execute-command", "--cluster", "c",
                                                                "--task", "t"]))
    assert aws_problem(["ecs", "execute-command", "--task", "t", "--interactive", "--command", "nitrodeck status"]) is None
    assert "no AWS service 'ecss'" in str(aws_problem(["ecss", "list-tasks"]))


def _script(blocks: list[Block], moto: str) -> str:
    parts = ["set -euo pipefail"]
    for n, block in enumerate(blocks, 1):
        if block.kind == "sh real-aws-only":
            continue
        parts.append(f"echo '### guide block {n} ({block.kind}) at docs/deploy.md:{block.line}' >&2")
        if block.kind == "sh aws":
            parts.append(f"export AWS_ENDPOINT_URL={shlex.quote(moto)}")
        parts.append(block.text)
        if block.kind == "sh aws":
            parts.append("unset AWS_ENDPOINT_URL")
    parts.append("echo '### guide done' >&2")
    return "\n".join(parts) + "\n"


@pytest.mark.slow
def test_guide_runs_as_written(nd_home: Path, moto_kms: str) -> None:
    require(bool(os.environ.get("DOCKER_HOST")), "the guide's doctor checks the Docker daemon: run through make test")
    blocks = guide_blocks(GUIDE.read_text())
    work = nd_home  # short: the rehearsal's home under it holds Unix sockets
    (work / "deploy").symlink_to(REPO / "deploy")
    (work / "script.sh").write_text(_script(blocks, moto_kms))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "NITRODECK_METADATA", "ECS_"))}
    env.pop("NITRODECK_BACKEND", None)  # the guide works with the automatic choice
    env.update(
        NITRODECK_HOME=str(work / "home"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        # what `aws configure` gives an operator; moto accepts any
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        proc = subprocess.run(
            ["bash", str(work / "script.sh")], cwd=work, env=env, capture_output=True, text=True, timeout=900
        )
    finally:
        kill_world(work / "out" / "demo")
        kill_world(work / "home")
    markers = [line for line in proc.stderr.splitlines() if line.startswith("### ")]
    assert proc.returncode == 0, (
        f"failed in {markers[-1] if markers else 'the first block'} (exit {proc.returncode})\n"
        f"stdout (tail):\n{proc.stdout[-3000:]}\nstderr (tail):\n{proc.stderr[-3000:]}"
    )
    assert markers[-1] == "### guide done"

    # what the commands did, seen from the other side
    aws = {"endpoint_url": moto_kms, "region_name": "us-east-1", "aws_access_key_id": "testing",
           "aws_secret_access_key": "testing"}
    stack = boto3.client("cloudformation", **aws).describe_stacks(StackName="nitrodeck")["Stacks"][0]
    params = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert params["Image"].endswith("/nitrodeck:1.0.1") and params["DesiredCount"] == "1"
    eif_info = json.loads(subprocess.run(
        [sys.executable, "-m", "console", "--backend", "emulator", "describe-eif", "--eif-path",
         str(work / "out" / "signer-1.0.1.eif"), "--json"], capture_output=True, text=True, env=env, cwd=REPO, timeout=60,
    ).stdout)
    assert params["ImagePcr0"] == eif_info["Measurements"]["PCR0"]
    key_arn = next(p for p in stack["Parameters"] if p["ParameterKey"] == "KmsKeyArn")["ParameterValue"]
    policy = json.loads(boto3.client("kms", **aws).get_key_policy(KeyId=key_arn, PolicyName="default")["Policy"])
    assert eif_info["Measurements"]["PCR0"] in json.dumps(policy)
    assert (work / "home" / "expected").is_dir()  # nitrodeck pin wrote the pins
    assert '"event": "ready"' in (work / "out" / "demo" / "up.log").read_text()
