"""Headless commands over the lifecycle journal and the pins: events, pin, pins, unpin.

``events`` reads core/ops/journal.py's journal (after noticing any exit nobody recorded yet);
``--follow`` keeps printing new events until interrupted. Pins are expected PCRs under an explicit
key (core/ops/expected.py): ``pin`` and ``unpin`` are mutating (audited, refused read-only).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

from console.argtypes import resolve_path
from console.cmd_lifecycle import _common, make_lifecycle
from console.output import emit_json, table
from core.errors import NitrodeckError, UsageError
from core.ops.journal import Event, parse_since
from core.ops.lifecycle import Lifecycle


def event_line(event: Event) -> str:
    """One event for people: time, event, who, and what it adds."""
    image = event.get("image")
    # a build has no enclave yet: the image it made stands for it
    who = event.name or (f"image {image}" if isinstance(image, str) and image else "-")
    if event.enclave_id:
        who += f" ({event.enclave_id})"
    parts = [event.time, f"{event.event:<13}", who]
    extra = event.extra
    if event.event == "exited":
        parts.append(f"uptime {extra.get('uptime_s')} s")
        if extra.get("exit_status") is not None:
            parts.append(f"status {extra['exit_status']}")
    elif event.event == "terminated" and extra.get("uptime_s") is not None:
        parts.append(f"uptime {extra['uptime_s']} s")
    elif event.event == "launch-failed":
        parts.append(f"{extra.get('code')}: {extra.get('message')}")
        if extra.get("detail"):
            parts.append(f"({extra['detail']})")
    elif event.event in ("pinned", "unpinned"):
        parts.append(f"pin {extra.get('pin')}")
    elif event.event == "pcr-mismatch":
        parts.append(f"pin {extra.get('pin')}: expected PCR0 {str(extra.get('expected_pcr0'))[:16]}…")
    elif event.event == "restarted":
        parts.append(f"restart {extra.get('restarts')} after {extra.get('previous_enclave_id')}")
    if event.pcr0 and event.event in ("built", "launched", "pinned"):
        parts.append(f"PCR0 {event.pcr0[:16]}…")
    if event.eif_path and event.event in ("built", "launched", "pinned", "launch-failed"):
        parts.append(event.eif_path)
    return "  ".join(str(p) for p in parts)


def _print(event: Event, as_json: bool) -> None:
    if as_json:
        print(json.dumps(event.to_json(), ensure_ascii=False), flush=True)
    else:
        print(event_line(event), flush=True)
        for line in event.get("last_console") or []:
            print(f"    | {line}", flush=True)


def cmd_events(args: argparse.Namespace) -> int:
    since = parse_since(args.since) if args.since is not None else None  # `--since ""` is an error, not "all"
    if args.enclave is not None and not (0 < len(args.enclave.strip()) <= 256):
        raise UsageError("give an enclave ID or name (at most 256 characters)", where="--enclave",
                         hint="IDs and names are in `nitrodeck events` and `nitrodeck describe`")
    lc = make_lifecycle(args, echo_commands=False)
    events = lc.events(since=since, enclave=args.enclave)
    if not args.follow:
        for event in events:
            _print(event, args.json)
        if not events and not args.json:
            print("(no events)", file=sys.stderr)
        return 0
    stopping = {"now": False}

    def stop(signum: int, frame: object) -> None:
        stopping["now"] = True

    previous = signal.signal(signal.SIGTERM, stop)
    from core.ops.watch import SAFETY_POLL_S, DirWatcher

    # this process also notices exits while it watches, but runs describe-enclaves only when the
    # backend's enclave folder changed (the kernel says so: core/ops/watch.py), or every SAFETY_POLL_S
    # anyway; following the journal itself is a stat of one file
    watcher = DirWatcher(lc.backend.watch_dirs())
    described = [time.monotonic()]

    def tick() -> None:
        if watcher.wait(0) or time.monotonic() - described[0] >= SAFETY_POLL_S:
            described[0] = time.monotonic()
            _observe_quietly(lc)

    try:
        for event in lc.journal.follow(
            since=since, enclave=args.enclave, stop=lambda: stopping["now"], poll=1.0, tick=tick
        ):
            _print(event, args.json)
    except KeyboardInterrupt:
        pass
    finally:
        watcher.close()
        signal.signal(signal.SIGTERM, previous)
    return 0


def _observe_quietly(lc: Lifecycle) -> None:
    try:
        lc.describe()
    except NitrodeckError:
        pass


def pin_json(pin: Any) -> dict[str, Any]:
    return {
        "key": pin.key,
        "pcrs": {f"PCR{k}": v for k, v in sorted(pin.pcrs.items())},
        "pinned_at": pin.pinned_at,
        "eif_path": pin.eif_path,
        "migrated": pin.migrated,
    }


def cmd_pin(args: argparse.Namespace) -> int:
    eif_path = args.eif or args.eif_path
    if not eif_path or (args.eif and args.eif_path):
        raise UsageError("give the EIF once: `nitrodeck pin EIF` (or --eif-path EIF)", where="pin")
    args.eif_path = eif_path
    lc = make_lifecycle(args)
    pin = lc.pin_eif(eif_path, args.key)
    if args.json:
        # "image": the key under its earlier name (scripts written for `pin --eif-path --image`)
        emit_json({"backend": lc.backend.name, **pin_json(pin), "image": pin.key})
    else:
        print(f"pinned {args.eif_path} as {pin.key}: PCR0 {pin.pcrs[0][:16]}…")
    return 0


def cmd_pins(args: argparse.Namespace) -> int:
    lc = make_lifecycle(args, echo_commands=False)
    pins = lc.expected.all()
    unreadable = [{"file": path, "problem": why} for path, why in sorted(lc.expected.problems.items())]
    if args.json:
        emit_json({"backend": lc.backend.name, "pins": [pin_json(p) for p in pins], "unreadable": unreadable})
    else:
        for line in lc.expected.problem_lines():
            print(f"warning: {line}", file=sys.stderr)
        rows = [[p.key, p.pcrs[0][:16] + "…" if 0 in p.pcrs else "-", p.pinned_at or "-", p.eif_path or "-"] for p in pins]
        print(table(rows, ["KEY", "PCR0", "PINNED AT", "EIF"], empty="(nothing pinned)"))
    return 0


def cmd_unpin(args: argparse.Namespace) -> int:
    lc = make_lifecycle(args)
    lc.unpin(args.key)
    if args.json:
        emit_json({"backend": lc.backend.name, "unpinned": args.key})
    else:
        print(f"unpinned {args.key}")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("events", help="the lifecycle journal: launches, exits, terminations, pins")
    p.add_argument("--since", metavar="DURATION|TIME", help="e.g. 15m, 1h30m, 2h, 7d, or an RFC 3339 time")
    p.add_argument("--enclave", metavar="ID|NAME", help="only this enclave's events")
    p.add_argument("--follow", action="store_true", help="keep printing new events until interrupted")
    _common(p)
    p.set_defaults(func=cmd_events)

    p = subparsers.add_parser("pin", help="pin an EIF's PCRs as expected (under its image name, or --as KEY)")
    p.add_argument("eif", metavar="EIF", nargs="?", type=resolve_path,
                   help="the EIF whose PCR0/1/2 (and PCR8 when signed) to pin")
    p.add_argument("--eif-path", type=resolve_path, help="the same, as a flag (the deploy guide's spelling)")
    p.add_argument("--as", "--image", dest="key", metavar="KEY", help="the pin's name (default: the EIF's image name)")
    _common(p)
    p.set_defaults(func=cmd_pin)

    p = subparsers.add_parser("pins", help="every pinned set of expected PCRs")
    _common(p)
    p.set_defaults(func=cmd_pins)

    p = subparsers.add_parser("unpin", help="remove a pin by its key")
    p.add_argument("key", metavar="KEY", help="the pin to remove (as `nitrodeck pins` lists it)")
    _common(p)
    p.set_defaults(func=cmd_unpin)
