"""nitro-emu: a nitro-cli 1.5.0 compatible emulator of AWS Nitro Enclaves for a plain Linux host.

Modules: cli (commands, output), supervisor (one daemon per enclave, nitro-cli's "enclave process"),
state (the shared enclave table under an fcntl lock), allocator (allocator.yaml, modelled CPU and
hugepage pools, ``snapshot()`` for status screens), instance (the modelled parent instance,
instance.yaml), isolation (network/user namespaces, CPU affinity, memory cgroup or RLIMIT_AS),
enclave_init (the stand-in init: banner, 0xB7 heartbeat, exec), console (console files), errors
(E00..E60), logs (err logs, nitro_enclaves.log), control (supervisor messages), eifinfo (describe-eif).

Where the emulator differs from Nitro, on purpose:

* a 5th enclave fails with E29 at NE_CREATE_VM, before any memory is allocated (no slot left);
* run-enclave failures raised by the supervisor are wrapped like nitro-cli's (inner block,
  ``Failed connections: 1``, E39, exit 39); argument errors are printed alone (see cli.py);
* the enclave runs the image's command as a host process: interpreters named by the image (python3,
  sh) come from the host PATH, the emulator's own interpreter first; absolute paths in cmd/env that
  exist in the unpacked rootfs point at the rootfs copy;
* console files live at ``<home>/emulator/console/<enclave-id>.log`` and outlive the enclave
  (`console` on a terminated ID is E11, as on Nitro, but the file stays readable);
* describe-enclaves prints nitro-cli's keys only; the emulator's own facts per enclave (EIF path,
  ``Isolation`` {NetworkNamespace, UserNamespace, HostCPUs, MemoryLimit {Kind: cgroup-v1|rlimit-as,
  Bytes}}) are on the nitro-emu-only command ``emulator-describe``.

docs/emulator.md has the conformance table: every command and failure path against nitro-cli 1.5.0.
"""
