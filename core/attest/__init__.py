"""Attestation: the NSM client that asks for documents inside the enclave, the document's parser,
the trust roots (AWS Nitro root G1, an explicitly chosen test root), and the verifier that turns a
document into a checklist.

May import: core's root modules, core.crypto and core.channel. Enclave-safe.
"""
