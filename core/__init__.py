"""nitrodeck core: the enclave lifecycle library shared by the console and the enclave payload (no UI)."""

__version__ = "0.1.0"
