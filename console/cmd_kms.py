"""Headless commands for key release: `proxy`, `kms seal`, `kms local-server`, `provision`, `up`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from console.argtypes import abs_path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    _register_proxy(sub)
    _register_kms(sub)
    _register_provision(sub)
    _register_up(sub)


# --- proxy ------------------------------------------------------------------------------------------


def _register_proxy(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "proxy",
        help="vsock-proxy compatible relay: vsock LOCAL_PORT -> TCP REMOTE_ADDR:REMOTE_PORT",
        description="Relay vsock connections on the parent (CID 3) to a TCP endpoint on the allowlist.",
    )
    # numbers are parsed by _cmd_proxy, so bad ones get vsock-proxy's messages and exit status 1
    p.add_argument("local_port", metavar="LOCAL_PORT", help="vsock port to listen on")
    p.add_argument("remote_addr", metavar="REMOTE_ADDR", help="host to relay to (must be allowlisted)")
    p.add_argument("remote_port", metavar="REMOTE_PORT", help="TCP port to relay to")
    p.add_argument("--config", type=abs_path, default=None, help="allowlist YAML (default: vsock-proxy.yaml)")
    p.add_argument("-w", "--num_workers", default="4", dest="num_workers", help="concurrent connections")
    ipv = p.add_mutually_exclusive_group()
    ipv.add_argument("-4", "--ipv4", action="store_const", const=4, dest="ip_version", help="resolve to IPv4 only")
    ipv.add_argument("-6", "--ipv6", action="store_const", const=6, dest="ip_version", help="resolve to IPv6 only")
    p.set_defaults(func=_cmd_proxy)


def _wait_for_signal(stop: threading.Event) -> None:
    def handler(_sig: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    while not stop.wait(1.0):
        pass


def _unsigned(text: str, high: int) -> int | None:
    """Rust's ``str::parse`` for an unsigned type: optional '+', decimal digits, in range; else None."""
    digits = text[1:] if text.startswith("+") else text
    if not digits.isascii() or not digits.isdigit() or len(digits) > 20:
        return None
    value = int(digits)
    return value if value <= high else None


def _cmd_proxy(args: argparse.Namespace) -> int:
    from core.backends.registry import select_backend
    from core.channel.proxy import ProxyError, VsockProxy

    # vsock-proxy's order and words: local port (u32), remote port (u16), workers (usize, not 0)
    local_port = _unsigned(args.local_port, 0xFFFFFFFF)
    remote_port = _unsigned(args.remote_port, 0xFFFF)
    workers = _unsigned(args.num_workers, 2**63 - 1)
    for value, message in (
        (local_port, "Local port is not valid"),
        (remote_port, "Remote port is not valid"),
        (workers, "Number of workers is not valid"),
    ):
        if value is None:
            print(f'Error: "{message}"', file=sys.stderr)
            return 1
    assert local_port is not None and remote_port is not None and workers is not None
    if workers == 0:
        print('Error: "Number of workers must not be 0"', file=sys.stderr)
        return 1
    try:
        backend = select_backend(getattr(args, "backend", None))
        proxy = VsockProxy(
            local_port,
            args.remote_addr,
            remote_port,
            transport=backend.transport(),
            config=args.config,
            workers=workers,
            ip_version=args.ip_version,
        )
        proxy.start()
    except ProxyError as err:
        # vsock-proxy's exact refusal line, so existing runbooks and alerts still match
        print(err.vsock_proxy_line(), file=sys.stderr)
        if err.where:
            print(f"nitrodeck: {err.where}", file=sys.stderr)
        return 1
    print(
        f"nitrodeck proxy: vsock port {args.local_port} -> {args.remote_addr}:{args.remote_port}",
        file=sys.stderr,
        flush=True,
    )
    stop = threading.Event()
    try:
        _wait_for_signal(stop)
    finally:
        proxy.stop()
    return 0


# --- kms --------------------------------------------------------------------------------------------


def _register_kms(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("kms", help="KMS key release: seal a wallet key to an EIF, run the local KMS")
    ksub = p.add_subparsers(dest="kms_command", metavar="KMS_COMMAND", required=True)

    seal = ksub.add_parser(
        "seal",
        help="pin a KMS key policy to an EIF's PCRs and encrypt a wallet key under it",
        description="Prints the key policy for review; --apply puts it, then seals. The plaintext key never touches disk.",
    )
    seal.add_argument("--key-id", required=True, help="the KMS key (ID or ARN) to seal under")
    seal.add_argument("--eif", required=True, type=abs_path, help="the EIF whose PCRs the policy pins")
    src = seal.add_mutually_exclusive_group()
    src.add_argument(
        "--generate", choices=("secp256k1",), default=None, help="generate a new wallet key (default)"
    )
    src.add_argument(
        "--in", dest="in_file", type=abs_path, default=None, help="raw 32-byte or PEM/DER private key"
    )
    seal.add_argument(
        "--apply",
        action="store_true",
        help="put the policy (PutKeyPolicy), then seal; without it: review only",
    )
    seal.add_argument("--endpoint-url", default=None, help="KMS endpoint (default: AWS, or the local KMS)")
    seal.add_argument("--region", default=None, help="AWS region (default: the SDK's)")
    seal.add_argument("--principal", default=None, help="IAM principal ARN allowed to call Decrypt")
    seal.add_argument("--out", type=abs_path, default=None, help="ciphertext file (default: <eif>.wallet.kms)")
    seal.add_argument("--json", action="store_true", help="print JSON (shapes in docs/cli-json.md)")
    seal.set_defaults(func=_cmd_seal)

    srv = ksub.add_parser("local-server", help="run the local KMS (moto + Recipient layer) on 127.0.0.1")
    srv.add_argument("--json", action="store_true", help="print the endpoint as JSON")
    srv.set_defaults(func=_cmd_local_server)


def _cmd_seal(args: argparse.Namespace) -> int:
    from console.output import emit_json
    from core.ops.provision import seal

    report = seal(
        key_id=args.key_id,
        eif=args.eif,
        generate=args.generate,
        in_file=args.in_file,
        apply=args.apply,
        endpoint_url=args.endpoint_url,
        region=args.region,
        principal=args.principal,
        out=args.out,
        read_only=bool(getattr(args, "read_only", False)),
    )
    if args.json:
        emit_json(report.as_dict())
        return 0
    print("Key policy pinned to the EIF's measurements (review before applying):")
    print(report.policy_json)
    if not report.applied:
        print(
            "policy applied: no. Nothing was sealed: review the policy, then run again with --apply",
            file=sys.stderr,
        )
        return 0
    print("policy applied: yes", file=sys.stderr)
    print(f"ciphertext written to {report.ciphertext_file}", file=sys.stderr)
    print(f"wallet public key: {report.public_key_hex}", file=sys.stderr)
    if report.public_key_der is not None:
        # the form `nitrodeck sign` and `up`'s "provisioned" event show
        print(
            f"wallet public key (SPKI DER, as test-sign shows it): {report.public_key_der.hex()}",
            file=sys.stderr,
        )
    return 0


def _cmd_local_server(args: argparse.Namespace) -> int:
    from console.output import emit_json
    from core.errors import ReadOnlyError
    from emulator.kms import LocalKms, allow_in_proxy_config, withdraw_from_proxy_config

    if getattr(args, "read_only", False):
        # it writes its endpoint file and an allowlist entry: state, which read-only never changes
        raise ReadOnlyError("kms local-server is refused: nitrodeck runs read-only", where="kms local-server")
    kms = LocalKms().start()
    try:
        info = kms.write_endpoint_file()
        # so `nitrodeck proxy 8000 127.0.0.1 <port>` works with the emulator's default allowlist;
        # the entry is withdrawn when this server stops (and pruned by the next start if it dies)
        info["allowlist"] = str(allow_in_proxy_config(kms.port))
        if args.json:
            emit_json(info)
        else:
            print(f"local KMS: {kms.endpoint_url} (moto in-process, reached only through it)", file=sys.stderr, flush=True)
        stop = threading.Event()
        _wait_for_signal(stop)
    finally:
        withdraw_from_proxy_config(kms.port)
        kms.stop()
    return 0


# --- provision --------------------------------------------------------------------------------------


def _register_provision(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("provision", help="send a sealed key to an enclave; it releases it through KMS")
    p.add_argument("enclave", metavar="ENCLAVE", help="enclave ID, name or CID")
    p.add_argument("--ciphertext", required=True, type=abs_path, help="the sealed wallet key (from kms seal)")
    p.add_argument("--key-id", default=None, help="the KMS key (default: from the ciphertext)")
    p.add_argument("--region", default=None, help="AWS region (default: the SDK's)")
    p.add_argument("--proxy-port", type=int, default=8000, help="vsock port of the KMS proxy (default 8000)")
    p.add_argument("--port", type=int, default=5005, help="the enclave's protocol port")
    p.add_argument("--credentials", action="store_true", help="also hand in this session's AWS credentials")
    p.add_argument("--json", action="store_true", help="print the enclave's answer as JSON")
    p.set_defaults(func=_cmd_provision)


def _cmd_provision(args: argparse.Namespace) -> int:
    from console.output import emit_json
    from core.ops.provision import provision_enclave

    result = provision_enclave(
        args.enclave,
        args.ciphertext,
        key_id=args.key_id,
        region=args.region,
        proxy_port=args.proxy_port,
        port=args.port,
        send_credentials=args.credentials,
        backend_flag=getattr(args, "backend", None),
        read_only=bool(getattr(args, "read_only", False)),
    )
    if args.json:
        emit_json(result)
    else:
        public = result.get("public_key")
        # hex, the form `nitrodeck sign` shows (the enclave answers with raw SPKI DER bytes)
        shown = public.hex() if isinstance(public, bytes | bytearray) else str(public or "?")
        print(f"provisioned: signing key {shown}")
    return 0


# --- up ---------------------------------------------------------------------------------------------


def _register_up(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("up", help="ECS parent bootstrap: build, launch, bridge, proxy, provision, supervise")
    p.add_argument("--config", type=abs_path, default=None, help="YAML configuration")
    p.add_argument("--cpu-count", type=int, default=None, help="CPUs for the enclave")
    p.add_argument("--memory", type=int, default=None, help="MiB")
    p.add_argument("--cid", type=int, default=None, help="the enclave's CID")
    p.add_argument("--ciphertext", type=abs_path, default=None, help="the sealed wallet key to provision")
    p.add_argument("--key-id", default=None, help="the KMS key the ciphertext is sealed under")
    p.add_argument("--region", default=None, help="AWS region")
    p.add_argument("--kms-endpoint", default=None, help="KMS endpoint; 'local' starts the local KMS")
    p.add_argument("--source", choices=("docker", "payload"), default=None, help="how the EIF is built")
    p.add_argument("--debug-mode", action="store_true", default=None, help="launch in debug mode")
    p.add_argument(
        "--check-ready",
        action="store_true",
        help="do not start anything: exit 0 when the `up` of this configuration serves (its ready file, "
        "its process, and the enclave answering health through the bridge), else 1; the container healthCheck",
    )
    p.set_defaults(func=_cmd_up)


def _cmd_up(args: argparse.Namespace) -> int:
    from core.up.config import load_config
    from core.up.runner import run_up

    flags = {
        "cpu_count": args.cpu_count,
        "memory_mib": args.memory,
        "cid": args.cid,
        "ciphertext": str(args.ciphertext) if args.ciphertext else None,
        "key_id": args.key_id,
        "region": args.region,
        "kms_endpoint": args.kms_endpoint,
        "source": args.source,
        "debug_mode": args.debug_mode,
    }
    config = load_config(args.config, flags={k: v for k, v in flags.items() if v is not None})
    if args.check_ready:
        from core.up.runner import check_ready

        readiness = check_ready(config.name)
        print(readiness.reason)
        return 0 if readiness.ready else 1
    from console.agent.cli import in_process_agent
    from console.wiring import payload_factory

    return run_up(
        config,
        backend_flag=getattr(args, "backend", None),
        read_only=bool(getattr(args, "read_only", False)),
        payload=payload_factory,
        agent=in_process_agent,
    )
