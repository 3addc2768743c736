"""`nitrodeck pin --eif-path EIF [--image NAME]`: pin an EIF's PCRs as its image's expected measurements.

What the TUI's `P` does for a running enclave, for the deploy pipeline: after a re-measure (new image,
new nitro-cli), the new EIF's PCRs become what `status`, the TUI and test-sign compare enclaves with.
Mutating (refused read-only) and audited like every lifecycle action.
"""

from __future__ import annotations

import argparse

from console.output import emit_json, key_values


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("pin", help="pin an EIF's PCRs as the expected measurements of its image")
    p.add_argument("--eif-path", required=True, help="the EIF whose PCR0/1/2 (and PCR8 when signed) to pin")
    p.add_argument("--image", default=None, help="image name to pin under (default: the EIF's own image name)")
    p.add_argument("--json", action="store_true", help="print the pin as JSON")
    p.set_defaults(func=_cmd_pin)


def _cmd_pin(args: argparse.Namespace) -> int:
    from console.cmd_lifecycle import make_lifecycle
    from core.errors import UsageError

    lifecycle = make_lifecycle(args)
    info = lifecycle.describe_eif(args.eif_path)
    image = args.image or info.image_name
    if not image:
        raise UsageError("the EIF names no image", where=args.eif_path, hint="pass --image NAME")
    pin = lifecycle.pin(image, info.measurements)
    if args.json:
        emit_json({"image": pin.image, "pcrs": {f"PCR{k}": v for k, v in sorted(pin.pcrs.items())},
                   "pinned_at": pin.pinned_at})
    else:
        print(key_values([("image", pin.image), *((f"PCR{k}", v) for k, v in sorted(pin.pcrs.items()))]))
    return 0
