"""KMS on the parent's side and the enclave's: credentials, the client, PCR-pinned key policies and the
wallet key's forms. Enclave-safe (enclave_app imports it): it may import only core's root modules and
core.crypto; sealing and provisioning, which need the lifecycle, live in core.ops.provision.

Import from the modules (``core.kms.client``, ``.policy``, ``.wallet``), not from here: this file loads
nothing, so the enclave, which needs only the client, does not carry the policy builder or the wallet.
"""
