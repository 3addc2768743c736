"""The nitrodeck enclave payload: a small signing and attestation server that runs inside the enclave.

It listens on a vsock port (core.channel.protocol frames), makes its keys inside the enclave at start-up and
never lets a private key leave the process. ``python -m enclave_app --port 5005`` starts it.
Extension modules add protocol methods through :func:`enclave_app.methods.register_method`.
"""

from core import __version__

__all__ = ["__version__"]
