"""The fleet's drill-down: a host's full dashboard read through its agent (a real `nitrodeck serve` over
an emulated host with real enclaves), strictly read-only; what the agent's /status now carries for it;
`fleet --agent URL` and `--open NAME`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from console.agent.fleet import HostEntry, agent_entry, poll_fleet, read_tokens
from console.agent.fleet_app import FleetApp, HostDashboard
from console.agent.remote import READ_ONLY_DETAIL, AgentEvents, RemoteSource, open_remote
from console.screenshots import wait_until
from console.widgets.console_pane import ConsolePane
from console.widgets.enclave_table import EnclaveTable
from console.widgets.header import StatusHeader
from core.errors import ReadOnlyError
from core.models import LaunchRequest
from core.ops.lifecycle import Lifecycle
from tests.agent_world import launch, script_eif, start_agent, write_world
from tests.conftest import REPO, require, wait_for
from tests.test_tmux_tui import Term

pytestmark = pytest.mark.slow

MUTATING = ("build", "launch", "terminate", "terminate_all", "pin")


def plain(widget: object) -> str:
    content = getattr(widget, "content", None)
    content = content if content is not None else widget.render()  # type: ignore[attr-defined]
    return str(getattr(content, "plain", content))


def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.token"
    path.write_text("drill-token-0123456789abcdef\n")
    path.chmod(0o600)
    return path


def notes(app: FleetApp) -> list[str]:
    return [n.message for n in app._notifications]


@pytest.fixture
def host(nd_home: Path, tmp_path: Path) -> dict[str, str]:
    """An emulated parent: "svc" pinned and matching, "dbg" in debug mode (its console streams locally)."""
    write_world(nd_home)
    lc = Lifecycle()
    eif = script_eif(lc, tmp_path, "svc")
    ids = {"svc": launch(lc, eif, "svc"), "dbg": launch(lc, eif, "dbg", debug=True)}
    lc.expected.pin("svc", lc.describe_eif(eif).measurements)
    return ids


async def test_enter_opens_the_hosts_dashboard_read_only(host: dict[str, str], nd_home: Path, tmp_path: Path) -> None:
    token = token_file(tmp_path)
    agent = start_agent(tmp_path, "--token-file", str(token), listen="127.0.0.21:0")
    entries = [HostEntry("parent-a", agent.url, str(token)), HostEntry("parent-b", "http://127.0.0.22:9")]
    tokens = read_tokens(entries)
    by_name = {e.name: e for e in entries}
    app = FleetApp(lambda: poll_fleet(entries, timeout=2.0, tokens=tokens), every=3600,
                   opener=lambda name: open_remote(by_name[name], tokens, 2.0), dashboard_refresh=0.5)
    lc = Lifecycle()
    audit = nd_home / "audit.log"
    audited = audit.read_text().splitlines()
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_until(pilot, lambda: len(app.reports) == 2, 30)
            await wait_until(pilot, lambda: app.selected == "parent-a")  # the first row: its enclaves show below
            await pilot.press("enter")
            await wait_until(pilot, lambda: isinstance(app.screen, HostDashboard) and app.screen.snapshot is not None, 30)
            dash = app.screen
            assert isinstance(dash, HostDashboard)

            # the real dashboard, fed by the agent: names, IDs (the row keys; the detail pane shows them in
            # full), verdicts against the pins, the host's instance and backend
            table = dash.query_one("#enclaves", EnclaveTable)
            await wait_until(pilot, lambda: table.row_count == 2)
            verdicts = {}
            for enclave_id in host.values():
                row = table.get_row_index(enclave_id)
                cells = [str(c) for c in table.get_row_at(row)]
                verdicts[cells[table.columns_shown.index("Name")]] = cells[table.columns_shown.index("PCRs")]
            assert verdicts == {"svc": "MATCH", "dbg": "debug"}
            header = plain(dash.query_one("#header", StatusHeader))
            assert "i-0agent0000000001" in header and "EMULATOR" in header
            assert "READ-ONLY" in header and "parent-a via its agent" in header
            table.move_cursor(row=table.get_row_index(host["svc"]))
            await pilot.pause(0.1)
            detail = plain(dash.query_one("#detail-body"))
            assert host["svc"] in detail and "MATCH expected" in detail and "pin svc (image name)" in detail
            assert "EIF details (describe-eif): not available through the agent" in detail
            assert "launched" in detail  # the journal's events, through /events
            assert dash.snapshot.started.get(host["svc"]) is not None  # the age column, from the agent

            # read-only whatever happens: no mutating key, none of what the agent cannot serve, and the
            # source itself refuses before asking anything
            assert dash.read_only and dash.read_only_reason.detail == READ_ONLY_DETAIL
            for action in (*MUTATING, "test_sign", "doctor", "audit_log"):
                assert dash.check_action(action, ()) is False, action
            await wait_until(pilot, lambda: bool(dash.query("FooterKey")))
            footer = " ".join(plain(k) for k in dash.query("FooterKey"))
            assert "Fleet" in footer
            for label in ("Build", "Launch", "Terminate", "Test-sign"):
                assert label not in footer
            for key in ("l", "t", "b", "T", "P"):
                await pilot.press(key)
                await pilot.pause(0.05)
                assert app.screen is dash  # no dialog opened
            assert any(READ_ONLY_DETAIL in n for n in notes(app))
            await pilot.press("s")
            await pilot.pause(0.05)
            assert app.screen is dash and any("Test-sign: not available through the agent" in n for n in notes(app))
            assert await dash.run_command("terminate") is False and await dash.run_command("doctor") is False
            for call in (lambda s: s.terminate(host["svc"]), lambda s: s.terminate_all(),
                         lambda s: s.launch(LaunchRequest("/x.eif", 64, cpu_count=2)),
                         lambda s: s.pin("svc", lc.describe()[0].measurements)):
                with pytest.raises(ReadOnlyError, match="remote host via its agent: read-only"):
                    call(dash.source)

            # the console of the debug-mode enclave is not served by the agent: said so, not an error
            table.move_cursor(row=table.get_row_index(host["dbg"]))
            await pilot.pause(0.1)
            pane = dash.query_one("#console", ConsolePane)
            await wait_until(pilot, lambda: "not available through the agent" in pane.note)

            # live: an enclave ending on the host shows here (the agent's event stream, or the poll)
            lc.terminate(host["dbg"])
            await wait_until(pilot, lambda: dash.snapshot is not None and len(dash.snapshot.enclaves) == 1, 30)
            await wait_until(pilot, lambda: "1 running, 1 exited" in str(table.border_title))

            # q goes back to the fleet; o opens again, esc goes back too
            await pilot.press("q")
            await wait_until(pilot, lambda: not isinstance(app.screen, HostDashboard))
            assert app.query_one("#hosts").has_focus or app.focused is not None
            await pilot.press("o")
            await wait_until(pilot, lambda: isinstance(app.screen, HostDashboard))
            await pilot.press("escape")
            await wait_until(pilot, lambda: not isinstance(app.screen, HostDashboard))

            # an unreachable host: its row says why, and Enter says so instead of opening anything
            await pilot.press("down")
            await wait_until(pilot, lambda: app.selected == "parent-b")
            await pilot.press("enter")
            await pilot.pause(0.1)
            assert not isinstance(app.screen, HostDashboard)
            assert any("parent-b is unreachable" in n for n in notes(app))

            # a host whose agent dies after the last poll: its dashboard opens and shows the error
            agent.stop()
            await pilot.press("up")
            await wait_until(pilot, lambda: app.selected == "parent-a")
            await pilot.press("enter")
            await wait_until(pilot, lambda: isinstance(app.screen, HostDashboard) and app.screen.refresh_error is not None, 30)
            dash = app.screen
            assert "ND-AGENT" in plain(dash.query_one("#header", StatusHeader))
            assert dash.query_one("#enclaves", EnclaveTable).row_count == 0
            await pilot.press("q")
            await wait_until(pilot, lambda: not isinstance(app.screen, HostDashboard))
    finally:
        agent.stop()
    # nothing the dashboard did changed the host: "svc" still runs, and the only audited action since is
    # this test's own terminate of "dbg" on the host
    assert [e.enclave_id for e in lc.describe()] == [host["svc"]]
    since = audit.read_text().splitlines()[len(audited):]
    assert [json.loads(line)["action"] for line in since] == ["terminate"]


def test_the_agents_status_carries_what_a_dashboard_needs(host: dict[str, str], tmp_path: Path) -> None:
    lc = Lifecycle()
    lc.terminate(host["dbg"])
    crash = script_eif(lc, tmp_path, "crash", "echo bye\nexit 3\n")
    crashed = launch(lc, crash, "crash")
    lc.expected.pin("crash", lc.describe_eif(crash).measurements)
    agent = start_agent(tmp_path, listen="127.0.0.23:0")
    try:
        # the agent notices the exit itself (its journal records it), then serves it
        def exited() -> dict | None:
            status = agent.get_json("/status")
            assert isinstance(status, dict)
            return status if any(e.get("enclave_id") == crashed for e in status["exited"]) else None

        status = wait_for(exited, timeout=30, interval=0.2)
        # and the dashboard's source reads it: an EXITED row judged against its pin, the events per enclave
        snap = RemoteSource.connect(agent_entry(agent.url), None, 5.0).snapshot()
    finally:
        agent.stop()
    svc = next(e for e in status["enclaves"] if e["EnclaveID"] == host["svc"])
    pinned = lc.describe_eif(Path(tmp_path / "svc.eif")).measurements
    assert svc["ExpectedPCRs"] == "match" and svc["ExpectedPCRsPin"] == "svc" and svc["ExpectedPCRsPinnedBy"] == "image"
    assert svc["ExpectedMeasurements"] == {"PCR0": pinned.pcr0, "PCR1": pinned.pcr1, "PCR2": pinned.pcr2}
    assert svc["StartedAt"].startswith("20")
    exited = next(e for e in status["exited"] if e["enclave_id"] == crashed)
    assert exited["event"] == "exited" and exited["ExpectedPCRs"] == "match" and exited["ExpectedPCRsPin"] == "crash"
    assert status["journal"]["path"].endswith("journal.jsonl")
    row = next(r for r in snap.exited if r.enclave.enclave_id == crashed)
    assert row.verdict == "match" and row.pin == "crash (image name)" and row.event.get("uptime_s") is not None
    assert snap.matches[host["svc"]] == "match" and snap.expected[host["svc"]] == pinned.pcrs()
    assert [e.event for e in snap.events[crashed]][:1] == ["launched"] and snap.events[crashed][-1].event == "exited"


def test_the_event_stream_wakes_a_dashboard(host: dict[str, str], tmp_path: Path) -> None:
    agent = start_agent(tmp_path, listen="127.0.0.24:0")
    source = RemoteSource.connect(agent_entry(agent.url), None, 2.0)
    watcher = source.change_watcher()
    assert isinstance(watcher, AgentEvents)
    try:
        assert watcher.wait(0.5) is False  # nothing happened yet
        Lifecycle().terminate(host["dbg"])
        assert watcher.wait(20) is True  # the journal's "terminated", streamed
        watcher.close()
        assert watcher.wait(5) is False  # closed: returns at once, reports nothing
    finally:
        watcher.close()
        agent.stop()


def run_fleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "console", "fleet", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env=dict(os.environ))


def test_fleet_agent_and_open_flags(host: dict[str, str], tmp_path: Path) -> None:
    token = token_file(tmp_path)
    agent = start_agent(tmp_path, "--token-file", str(token), listen="127.0.0.25:0")
    try:
        res = run_fleet("--agent", agent.url, "--token-file", str(token), "--json", "--timeout", "5")
        assert res.returncode == 0, res.stderr
        [report] = json.loads(res.stdout)["hosts"]
        assert report["name"] == "127.0.0.25" and report["reachable"] and report["running"] == 2
    finally:
        agent.stop()
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("- name: a\n  url: http://127.0.0.26:9\n")
    res = run_fleet("--hosts", str(hosts), "--open", "nobody")
    assert res.returncode == 2 and "no host named 'nobody'" in res.stderr and "hosts: a" in res.stderr
    res = run_fleet("--hosts", str(hosts), "--open", "a", "--json")
    assert res.returncode == 2 and "--open" in res.stdout + res.stderr
    res = run_fleet("--agent", "ftp://x", "--json")
    assert res.returncode == 2 and "not an http(s) URL" in res.stdout + res.stderr


async def test_open_at_start_shows_the_dashboard_first() -> None:
    from console.agent.fleet_frozen import frozen_fleet_app

    app = frozen_fleet_app()
    app.open_at_start = "signer-a"
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, HostDashboard) and app.screen.snapshot is not None)
        await pilot.press("escape")  # and the fleet is behind it
        await wait_until(pilot, lambda: not isinstance(app.screen, HostDashboard) and len(app.reports) == 3)


def test_fleet_agent_opens_the_dashboard_in_a_terminal(host: dict[str, str], nd_home: Path, tmp_path: Path) -> None:
    """`nitrodeck fleet --agent URL` in tmux: the host's dashboard first (whole columns: the table is laid out
    for the terminal), q back to the one-row fleet, q quits."""
    require(shutil.which("tmux") is not None, "tmux is not installed")
    token = token_file(tmp_path)
    agent = start_agent(tmp_path, "--token-file", str(token), listen="127.0.0.27:0")
    socket = f"nd-fleet-{os.getpid()}"
    term = Term(socket, "fleet")
    command = (f"cd {REPO} && env -u COLUMNS -u LINES TERM=xterm-256color {sys.executable} -m console fleet "
               f"--agent {agent.url} --token-file {token}")
    subprocess.run(["tmux", "-L", socket, "new-session", "-d", "-x", "120", "-y", "36", "-s", "fleet", command],
                   check=True, timeout=20)
    try:
        term.wait_for("127.0.0.27 via its agent")
        term.wait_for("(2 running")
        shown = term.wait_for("q Fleet")  # the footer is drawn a frame after the table
        assert "READ-ONLY" in shown and "EMULATOR" in shown
        rows = [line for line in shown.splitlines() if line.startswith(("│ svc ", "│ dbg "))]
        assert len(rows) == 2 and all("RUNNING" in r for r in rows), shown
        assert "MATCH" in rows[0] + rows[1] and "debug" in rows[0] + rows[1]
        term.keys("q")
        shown = term.wait_for("RUNNING/EXPECTED")
        assert "i-0agent0000000001" in shown and "2/-" in shown
        term.keys("q")
        wait_for(lambda: "fleet" not in term.tmux("list-sessions"), timeout=20)  # quit: the session ended
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=20)
        agent.stop()
