"""Backends: the interface to whatever runs enclaves (base), the registry that picks one, the real
nitro-cli backend, and the driver that runs a backend's nitro-cli-compatible program and parses its
output into core.models.

May import: core's root modules and core.channel (a backend hands out its vsock transport).
Never imports core.ops, core.up, or any implementation outside core (the emulator registers itself).
"""
