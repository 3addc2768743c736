"""`make run`: a demo world in $NITRODECK_HOME on the emulator, then the TUI.

Steps, each skipped when already done and each reported on stderr: write the emulator's
allocator.yaml (a pool with room for two enclaves), build the nitrodeck payload EIF into the
library, pin its measurements, and launch two enclaves if none run (one in debug mode, so its
console streams). A step that fails says why and the TUI opens anyway.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from core import home
from core.errors import NitrodeckError

ALLOCATOR = "---\n# nitrodeck demo: 1 GiB page + 512 MiB of 2 MiB pages, two full cores\nmemory_mib: 1536\ncpu_count: 4\n"
DEMO_ENCLAVES = (("payments-demo", False), ("payload-debug", True))
MEMORY_MIB = 256


def say(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


def write_allocator() -> None:
    path = home.emulator_etc() / "allocator.yaml"
    if path.exists():
        say(f"keeping {path}")
        return
    home.ensure(path.parent)
    path.write_text(ALLOCATOR, encoding="utf-8")
    say(f"wrote {path}")


def prepare() -> None:
    from core.models import LaunchRequest
    from core.ops.lifecycle import Lifecycle
    from emulator.backend import emulator_backend

    write_allocator()
    lc = Lifecycle(emulator_backend("flag"))
    eif = home.eif_library() / "nitrodeck-payload.eif"
    if not eif.is_file():
        from enclave_app.packaging import payload_build_request

        say(f"building the payload EIF into {eif}")
        built = lc.build(payload_build_request(str(eif)))
        say(f"built; PCR0 {built.measurements.pcr0[:16]}...")
    # an enclave is judged by the pin of its EIF (then its image name): pin what was built
    pin = lc.pin_eif(str(eif))
    say(f"pinned its PCRs as {pin.key}")
    running = lc.describe()
    if running:
        say(f"{len(running)} enclave(s) already running; not launching more")
        return
    for name, debug in DEMO_ENCLAVES:
        run = lc.launch(LaunchRequest(str(eif), memory_mib=MEMORY_MIB, cpu_count=2, debug_mode=debug, name=name))
        say(f"launched {name} ({run.enclave_id}, CID {run.cid}{', debug mode' if debug else ''})")


def main() -> int:
    os.environ.setdefault("NITRODECK_BACKEND", "emulator")
    # The payload runs `python3 -m enclave_app`; it needs this interpreter's packages.
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    say(f"NITRODECK_HOME={home.home()}")
    try:
        prepare()
    except ImportError as exc:
        say(f"part of nitrodeck is missing in this checkout ({exc.name}); opening the TUI on what there is")
    except NitrodeckError as err:
        say(f"could not prepare the demo world: {err}")
        say("opening the TUI anyway")
    from console.app import live_app

    try:
        app = live_app(os.environ["NITRODECK_BACKEND"], read_only=False)
    except NitrodeckError as err:
        say(str(err))
        return err.exit_status
    app.run()
    return int(app.return_code or 0)


if __name__ == "__main__":
    sys.exit(main())
