"""``python -m emulator`` is nitro-emu."""

import sys

from emulator.cli import main

sys.exit(main())
