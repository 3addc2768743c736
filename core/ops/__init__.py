"""Operations on enclaves, shared by the TUI and the CLI: the Lifecycle (build, describe, launch,
terminate, console, status; read-only enforced here), the audit log, resources (hugepages, CPU
pool), expected-PCR pins, test-sign, and sealing/provisioning keys.

May import: every core subpackage below it (root, crypto, channel, eif, attest, kms, backends).
"""
