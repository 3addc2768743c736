"""nitrodeck's operator console: the Textual TUI and the headless CLI, both on core's lifecycle."""
