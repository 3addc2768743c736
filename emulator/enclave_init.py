"""Stand-in for the enclave's init: boot banner, the 0xB7 heartbeat, then exec the image's command.

Run by the supervisor as the enclave process (``python -I enclave_init.py BOOT_SOCKET ROOTFS -- CMD...``),
already isolated and with the enclave's environment. Standard library only, so it starts fast and does
not depend on the caller's import path.

The order is the real init's (aws-nitro-enclaves-sdk-bootstrap init/init.c main): the heartbeat goes
out before /cmd is read, so run-enclave succeeds even when the command cannot run; the command's
failure then shows on the console (``execvpe: <cmd>: <strerror>``, ``child exited with error``) and
the enclave reboots, which on Nitro ends it.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import sys

HEARTBEAT = b"\xb7"
REBOOT = "[    1.000000] reboot: Restarting system\n"

BANNER = (
    "[    0.000000] Linux version 4.14.256 (nitrodeck emulator stand-in)\n"
    "[    0.000000] Command line: reboot=k panic=30 pci=off nomodules console=ttyS0 random.trust_cpu=on\n"
    "[    0.000000] x86/fpu: emulated enclave, no hypervisor\n"
    "[    0.010000] nsm: emulated Nitro Secure Module at $NITRODECK_NSM_SOCKET\n"
    "[    0.020000] Run /init as init process\n"
)


def resolve(cmd0: str, path_env: str) -> str | None:
    if "/" in cmd0:
        return cmd0 if os.path.isfile(cmd0) and os.access(cmd0, os.X_OK) else None
    return shutil.which(cmd0, path=path_env)


def heartbeat(boot_socket: str, timeout: float = 10.0) -> bool:
    # connect by a relative name from the socket's folder: the absolute path may exceed sun_path
    here = os.getcwd()
    folder, name = os.path.split(boot_socket)
    try:
        os.chdir(folder)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(name)
            sock.sendall(HEARTBEAT)
            return sock.recv(1) == HEARTBEAT
    except OSError:
        return False
    finally:
        os.chdir(here)


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("nitrodeck-init: usage: enclave_init.py BOOT_SOCKET ROOTFS -- CMD...", file=sys.stderr)
        return 2
    boot_socket, rootfs, cmd = argv[0], argv[1], argv[3:]
    sys.stdout.write(BANNER)
    sys.stdout.flush()
    if not heartbeat(boot_socket):
        print("nitrodeck-init: boot heartbeat was not acknowledged", flush=True)
        return 1
    if os.path.isdir(rootfs):
        os.chdir(rootfs)  # the image's working folder: relative commands resolve inside the rootfs
    program = resolve(cmd[0], os.environ.get("PATH", os.defpath))
    err = errno.EACCES if "/" in cmd[0] and os.path.isfile(cmd[0]) else errno.ENOENT
    if program is not None:
        try:
            os.execve(program, cmd, dict(os.environ))
        except OSError as exc:
            err = exc.errno or errno.ENOEXEC
    # init.c: the forked child's die2("execvpe", argv[0]) exits with errno; init reaps it, says so and
    # reboots (an enclave that reboots ends)
    sys.stdout.write(f"execvpe: {cmd[0]}: {os.strerror(err)}\nchild exited with error\n{REBOOT}")
    sys.stdout.flush()
    return err


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
