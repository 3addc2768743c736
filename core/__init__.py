"""nitrodeck core: the enclave lifecycle library shared by the console and the enclave payload (no UI).

Areas, lowest first; each imports only the areas its ``__init__`` docstring lists, all of them before it,
so the order is one direction (tests/test_layers.py ``MAY_IMPORT`` enforces this):

- root modules: ``errors``, ``models``, ``home``, ``checks``, ``files`` (stdlib and third-party only)
- ``crypto``: COSE_Sign1 and CMS
- ``channel``: vsock, the framed protocol, bridge, vsock-proxy
- ``eif``, ``attest``, ``kms``: the image and its measurements; attestation and NSM; KMS policies
- ``backends``: the backend interface, the registry, the real backend, the nitro-cli driver
- ``ops``: the lifecycle and what builds on it (audit, resources, pins, test-sign, provisioning)
- ``up``: the unattended bootstrap

core never imports ``console``, ``emulator`` or ``enclave_app``: the emulator registers itself as a
backend, and the payload's build request is handed to the Lifecycle by its caller.
"""

__version__ = "0.1.0"
