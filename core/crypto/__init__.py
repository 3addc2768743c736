"""Cryptographic formats: COSE_Sign1 (EIF signatures, attestation documents) and the BER CMS
EnvelopedData that KMS returns as CiphertextForRecipient.

May import: core's root modules (errors) and third-party libraries. Enclave-safe.
"""
