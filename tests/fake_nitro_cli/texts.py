"""nitro-cli 1.5.0's own texts, as data, for the stand-in ``nitro-cli`` in this folder.

Every text is copied from aws/aws-nitro-enclaves-cli at tag v1.5.0 (commit 2950b36); the comment
next to each says where (file:line at that tag). The stand-in prints them exactly as nitro-cli does,
so the real backend's parsing is tested against what nitro-cli really prints, not against what
nitrodeck's emulator prints. The error blocks' texts are tests/nitro_cli_texts.py's (one copy, shared
with the emulator's conformance tests); this module adds what only the stand-in prints.
"""

from __future__ import annotations

import os
import sys

# the stand-in runs as a script: tests/ itself is where nitro_cli_texts lives
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
from nitro_cli_texts import DETAIL, DETAIL_E19_FILE  # noqa: E402

VERSION = "1.5.0"
#: src/lib.rs create_app! (clap `version`), printed by --version as "Nitro CLI 1.5.0"
VERSION_LINE = f"Nitro CLI {VERSION}"

#: src/common/document_errors.rs:343 construct_help_link
HELP_LINK = "https://docs.aws.amazon.com/enclaves/latest/user/cli-errors.html#{code}"


def _numbered(template: str) -> str:
    """nitro_cli_texts writes nitro-cli's {} placeholders; the stand-in fills them by position ({0}, {1})."""
    parts = template.split("{}")
    return parts[0] + "".join(f"{{{i}}}{part}" for i, part in enumerate(parts[1:]))


#: src/common/document_errors.rs get_detailed_info (the text after "[ Exx ] "), from tests/nitro_cli_texts.py
#: (one copy of nitro-cli's words, file and line cited there); {0}, {1}, ... are the failure's
#: additional_info values (MISSING_INFO when absent). E19 carries its "File:" line, as with two values.
DETAILS = {code: _numbered(DETAIL[code]) for code in ("E11", "E20", "E21", "E22", "E26", "E27", "E29", "E35", "E39",
                                                       "E44", "E48", "E49", "E50", "E58")}
DETAILS["E19"] = _numbered(DETAIL["E19"] + DETAIL_E19_FILE)

#: src/main.rs:35-45, the actions named in error logs
RUN, DESCRIBE, TERMINATE, TERMINATE_ALL, BUILD, CONSOLE = (
    "Run Enclave", "Describe Enclave", "Terminate Enclave", "Terminate All Enclaves", "Build Enclave",
    "Enclave Console",
)

# progress lines
BUILD_START = "Start building the Enclave Image..."  # src/lib.rs:56
BUILD_DONE = "Enclave Image successfully created."  # src/lib.rs:176
ALLOCATING = "Start allocating memory..."  # src/enclave_proc/resource_manager.rs:626
STARTED = "Started enclave with enclave-cid: {cid}, memory: {mib} MiB, cpu-ids: {cpus}"  # resource_manager.rs:726
TERMINATED = "Successfully terminated enclave {id}."  # src/enclave_proc/commands.rs:174
FAILED_CONNECTIONS = "Failed connections: {n}"  # src/enclave_proc_comm.rs:315
CONSOLE_CONNECTING = "Connecting to the console for enclave {cid}..."  # src/lib.rs:407
CONSOLE_CONNECTED = "Successfully connected to the console."  # src/lib.rs:427
DOCKER_ERROR = "Docker error: {kind}"  # enclave_build/src/lib.rs:79, 129, 141 (Debug of DockerError)

# root causes as the error logs name them (file, line of the new_nitro_cli_failure! call, text)
NO_CPUS_IN_POOL = (  # resource_manager.rs:842 (NE_ERR_NO_CPUS_AVAIL_IN_POOL), raised at :858
    "src/enclave_proc/resource_manager.rs", 858,
    "The enclave cannot be created because no CPUs are available in the pool",
)
DEVICE_OPEN = ("src/enclave_proc/resource_manager.rs", 510, "Failed to open device file: {err}")
POOL_OPEN = ("src/enclave_proc/cpu_info.rs", 43, "Failed to open CPU pool file: {err}")
POOL_FILE = "/sys/module/nitro_enclaves/parameters/ne_cpus"  # cpu_info.rs:15
DEVICE_FILE = "/dev/nitro_enclaves"  # resource_manager.rs:66
INSUFFICIENT_CPUS = ("src/enclave_proc/cpu_info.rs", 70,
                     "Insufficient CPUs available (requested {n}, but maximum is {max})")
CPU_NOT_IN_POOL = ("src/enclave_proc/cpu_info.rs", 115, "The CPU with ID {id} is not available in the NE CPU pool")
EIF_TOO_BIG = ("src/enclave_proc/resource_manager.rs", 488,
               "At least {min} MB must be allocated (which is 4 times the EIF file size)")
MEMORY_LEFT = ("src/enclave_proc/resource_manager.rs", 397, "Failed to allocate entire memory ({left} MB remained)")
DESCRIBE_UNANSWERED = ("src/enclave_proc_comm.rs", 358, "Failed to connect to {n} enclave processes")
RUN_UNANSWERED = DESCRIBE_UNANSWERED
NOT_DEBUG = ("src/main.rs", 263,
             "The enclave was not started with the debug flag set, include '--debug-mode' in the run-enclave command")
SOCKET_CONNECT = ("src/enclave_proc_comm.rs", 134,
                  "Failed to connect to specific enclave process: Os {{ code: 2, kind: NotFound, message: \"No such "
                  "file or directory\" }}")
NAME_NOT_FOUND = ("src/lib.rs", 547, "No enclave matched the given name.")
BUILD_CONNECTION = ("src/lib.rs", 147, "Failed to create EIF image: DockerError")
BUILD_PULL = ("src/lib.rs", 164, "Failed to pull docker image: DockerError")
BUILD_DOCKER = ("src/lib.rs", 157, "Failed to build docker image: DockerError")
