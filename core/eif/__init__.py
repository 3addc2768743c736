"""The Enclave Image File: its format (read/write), measurements (PCR0/1/2/8), signatures, and the
build from a docker image, tarball or rootfs (newc cpio, kernel blobs).

May import: core's root modules and core.crypto. Never the lifecycle, backends or channels.
"""
