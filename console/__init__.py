"""nitrodeck's operator console: the Textual TUI and the headless CLI, both on core's lifecycle."""

# Every console entry point (CLI, TUI, demo, screenshots) needs the emulator backend registered.
from console import wiring as _wiring  # noqa: E402,F401
