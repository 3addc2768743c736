"""nitro-emu: a nitro-cli 1.5.0 compatible emulator of AWS Nitro Enclaves for a plain Linux host.

Modules: cli (commands, output), supervisor (one daemon per enclave), state (the shared enclave table),
allocator (allocator.yaml, CPU and hugepage pools), instance (the modelled parent instance),
isolation (namespaces, affinity, memory limits), enclave_init (the stand-in init), console (console
files), errors (E00..E60), logs (err logs, nitro_enclaves.log), control (supervisor messages).
"""
