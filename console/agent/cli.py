"""`nitrodeck serve`: the read-only agent (HTTP, Prometheus, server-sent events, EMF on stdout)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from console.argtypes import resolve_path
from console.output import progress

DEFAULT_LISTEN = "127.0.0.1:9181"


def _seconds(low: float, high: float) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a number of seconds") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is out of range ({low:g} to {high:g} seconds)")
        return value

    return parse


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="read-only agent: /status, /enclaves, /metrics (Prometheus), /events, /healthz over HTTP",
        description="A long-running, read-only agent. No endpoint can change anything, whatever the flags. "
                    "Listening anywhere but loopback needs --token-file.")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"where to listen (default {DEFAULT_LISTEN}; port 0: any free port, printed on stderr)")
    p.add_argument("--token-file", type=resolve_path, metavar="FILE",
                   help="bearer token file (mode 0600); every request then needs `Authorization: Bearer TOKEN`")
    p.add_argument("--tls-cert", type=resolve_path, metavar="PEM", help="serve HTTPS with this certificate chain")
    p.add_argument("--tls-key", type=resolve_path, metavar="PEM", help="the private key of --tls-cert")
    p.add_argument("--probe-sign", type=_seconds(5, 86400), metavar="SECONDS",
                   help="test-sign every running enclave this often (nitrodeck_testsign_last_ok)")
    p.add_argument("--emf", action="store_true",
                   help="print CloudWatch Embedded Metric Format lines on stdout (for the awslogs driver)")
    p.add_argument("--emf-interval", type=_seconds(1, 3600), default=60.0, metavar="SECONDS",
                   help="how often --emf prints (default 60)")
    p.add_argument("--safety-poll", type=_seconds(0.5, 3600), default=30.0, metavar="SECONDS",
                   help="refresh this often even when the enclave folders report no change (default 30)")
    p.add_argument("--web", action="store_true",
                   help="also serve the TUI in a browser (textual-serve), read-only, on --web-listen")
    p.add_argument("--web-listen", default="127.0.0.1:9182", metavar="HOST:PORT",
                   help="where --web listens (default 127.0.0.1:9182; same token rule as --listen)")
    p.add_argument("--ecs-cluster", metavar="NAME",
                   help="publish this agent's URL as the ECS attribute nitrodeck.endpoint on its container "
                        "instance, for `nitrodeck fleet --ecs-cluster`")
    p.add_argument("--advertise", metavar="URL",
                   help="the URL --ecs-cluster publishes (default: the listening URL)")
    p.add_argument("--backend", choices=("auto", "real", "emulator"), default=argparse.SUPPRESS,
                   help="nitro-cli backend (also accepted before the subcommand)")
    p.set_defaults(func=cmd_serve)

    p = subparsers.add_parser(
        "fleet",
        help="many parents at once, read through their agents (TUI; --json for one report)",
        description="One row per parent: instance ID, agent reachable, enclaves running/expected, PCR verdicts, "
                    "free CPU pool, last exit. Enter on a host opens its full dashboard, read through its agent; "
                    "q or esc comes back. Read-only, whatever the flags.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--hosts", type=resolve_path, metavar="FILE",
                        help="YAML list of hosts: name, url, token_file (relative to FILE), expected")
    source.add_argument("--ecs-cluster", metavar="NAME",
                        help="the agents that published nitrodeck.endpoint on this cluster's container instances")
    source.add_argument("--agent", metavar="URL",
                        help="one host: its agent's URL (its dashboard opens at once; --token-file, --ca-file)")
    p.add_argument("--open", dest="open_host", metavar="NAME",
                   help="open this host's dashboard at once (a hosts file name, or an instance ID with "
                        "--ecs-cluster); q or esc goes back to the fleet")
    p.add_argument("--token-file", type=resolve_path, metavar="FILE",
                   help="with --ecs-cluster or --agent: the bearer token of every agent (mode 0600)")
    p.add_argument("--ca-file", type=resolve_path, metavar="PEM",
                   help="with --ecs-cluster or --agent: verify https agents against this bundle "
                        "(hosts files say ca_file)")
    p.add_argument("--timeout", type=_seconds(0.2, 60), default=3.0, metavar="SECONDS",
                   help="per request (default 3): an unreachable host costs this, never the others")
    p.add_argument("--concurrency", type=int, default=32, choices=range(1, 257), metavar="N",
                   help="hosts asked at once (default 32)")
    p.add_argument("--refresh", dest="fleet_refresh", type=_seconds(1, 3600), default=10.0, metavar="SECONDS",
                   help="TUI: ask every host again this often (default 10)")
    p.add_argument("--json", action="store_true", help='print {"hosts": [...]} once and exit')
    p.set_defaults(func=cmd_fleet)


def make_state(args: argparse.Namespace) -> Any:
    from console.agent.state import HostState
    from console.wiring import payload_factory
    from core.backends.registry import select_backend
    from core.ops.lifecycle import Lifecycle

    backend = select_backend(getattr(args, "backend", None))
    # read-only whatever the flags: the agent has no endpoint that changes anything, and no code path either
    lifecycle = Lifecycle(backend, read_only=True, payload=payload_factory)
    return HostState(lifecycle, safety_poll=args.safety_poll, probe_every=args.probe_sign)


def start_server(args: argparse.Namespace, state: Any) -> Any:
    """Check the configuration (typed errors), bind, and return the server (not yet serving)."""
    from console.agent.auth import AgentConfigError, load_token, parse_listen, require_token_off_loopback
    from console.agent.server import AgentServer, tls_context

    host, port = parse_listen(args.listen)
    token = load_token(args.token_file) if args.token_file else None
    require_token_off_loopback(host, token)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise AgentConfigError("give both --tls-cert and --tls-key", where="serve")
    tls = tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    try:
        return AgentServer((host, port), state, token, tls)
    except OSError as exc:
        raise AgentConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", where="--listen") from None


def advertised_url(server: Any) -> str:
    """The URL others reach this agent at: a wildcard bind is published as this host's own address
    (on EC2 the hostname resolves to the private IP; resolving sends no traffic off the host)."""
    import socket

    host = str(server.server_address[0])
    if host not in ("0.0.0.0", "::"):
        return str(server.url)
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        return str(server.url)
    return f"{server.scheme}://{address}:{server.server_address[1]}"


def make_web(args: argparse.Namespace, server: Any, state: Any) -> Any:
    from console.agent.auth import parse_listen, require_token_off_loopback
    from console.agent.web import WebView

    host, port = parse_listen(args.web_listen, default_port=9182)
    require_token_off_loopback(host, server.token)
    return WebView(host, port, server.token, getattr(args, "backend", None), state.count_unauthorized)


def _emf_loop(state: Any, every: float, stop: threading.Event) -> None:
    from core.ops.metrics import emf_records

    while not stop.is_set():
        snap, counters = state.current()
        lines = [json.dumps(r, separators=(",", ":")) for r in emf_records(snap, counters)]
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
        stop.wait(every)


def cmd_serve(args: argparse.Namespace) -> int:
    state = make_state(args)
    server = start_server(args, state)  # refuses before any thread runs
    stop = threading.Event()

    def shutdown(signum: int, frame: Any) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    state.start()
    if args.emf:
        threading.Thread(target=_emf_loop, args=(state, args.emf_interval, stop), daemon=True).start()
    if args.ecs_cluster:
        from console.agent.ecs import publish_endpoint

        arn = publish_endpoint(args.ecs_cluster, args.advertise or advertised_url(server),
                               state.lifecycle.instance_id())
        progress(f"nitrodeck agent: published nitrodeck.endpoint on {arn}")
    web = make_web(args, server, state) if args.web else None
    progress(f"nitrodeck agent: listening on {server.url} (read-only"
             + (", token required" if server.token else "") + ")")
    try:
        if web is None:
            server.serve_forever(poll_interval=0.5)
        else:
            # textual-serve's event loop wants the main thread (signals); the agent runs beside it
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True).start()
            web.serve()
            server.shutdown()
    finally:
        stop.set()
        state.stop()
        server.server_close()
    return 0



def fleet_entries(args: argparse.Namespace) -> list[Any]:
    from console.agent.fleet import HostEntry, agent_entry, load_hosts

    if args.hosts:
        return load_hosts(args.hosts)
    token = str(args.token_file) if args.token_file else None
    ca_file = str(args.ca_file) if args.ca_file else None
    if getattr(args, "agent", None):
        return [agent_entry(args.agent, token, ca_file)]
    from console.agent.ecs import discover

    return [HostEntry(name, url, token, None, ca_file) for name, url in discover(args.ecs_cluster)]


def cmd_fleet(args: argparse.Namespace) -> int:
    from console.agent.fleet import fleet_json, poll_fleet, read_tokens
    from console.output import emit_json
    from core.errors import UsageError

    entries = fleet_entries(args)
    tokens = read_tokens(entries)  # a readable token file is refused before any host is asked
    open_at_start = args.open_host or (entries[0].name if getattr(args, "agent", None) else None)
    if args.json:
        if args.open_host:
            raise UsageError("--open opens a host's dashboard in the TUI; --json prints the fleet once",
                             where="--open", hint="leave out --json to open the dashboard")
        emit_json(fleet_json(poll_fleet(entries, args.timeout, args.concurrency, tokens)))
        return 0
    known = {e.name: e for e in entries}
    if open_at_start is not None and open_at_start not in known:
        names = ", ".join(sorted(known)[:8]) + (", ..." if len(known) > 8 else "")
        raise UsageError(f"no host named {open_at_start[:80]!r}", where="--open",
                         hint=f"hosts: {names}" if names else "the host list is empty")

    def poll() -> list[Any]:
        fresh = fleet_entries(args)  # a hosts file or a cluster may change while the view is open
        known.update({e.name: e for e in fresh})
        return poll_fleet(fresh, args.timeout, args.concurrency, tokens)

    def opener(name: str) -> Any:
        from console.agent.remote import open_remote

        entry = known.get(name)
        if entry is None:
            raise UsageError(f"no host named {name[:80]!r}", where="--open")
        return open_remote(entry, tokens, args.timeout)

    from console.agent.fleet_app import run_fleet_tui

    return run_fleet_tui(poll, args.fleet_refresh, opener, open_at_start)


def in_process_agent(listen: str, token_file: str | None) -> Any:
    """`serve:` in up.yaml: the same agent in `nitrodeck up`'s process; returns its URL and stop function."""
    args = argparse.Namespace(listen=listen, token_file=token_file, tls_cert=None, tls_key=None, probe_sign=None,
                              safety_poll=30.0, backend=None)
    state = make_state(args)
    server = start_server(args, state)
    state.start()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="agent", daemon=True)
    thread.start()
    progress(f"nitrodeck agent: listening on {server.url} (read-only, in nitrodeck up)")

    def stop() -> None:
        server.shutdown()
        state.stop()
        server.server_close()

    return server.url, stop
