"""`nitrodeck up`: the unattended parent-container bootstrap (config from YAML, env and flags; build,
launch, bridge, vsock-proxy, KMS key release, supervise).

May import: anything in core below it (root, crypto, channel, eif, attest, kms, backends, ops).
Nothing in core imports it.
"""
