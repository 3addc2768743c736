"""How bytes move between parent and enclave: vsock (AF_VSOCK on Nitro, Unix sockets under the
emulator), the framed CBOR protocol, the TCP<->vsock bridge and the vsock-proxy relay.

May import: core's root modules. Enclave-safe (the payload serves the protocol over vsock).
"""
