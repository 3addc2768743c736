"""nitro-cli 1.5.0's own texts, as data, for the stand-in ``nitro-cli`` in this folder.

Every text is copied from aws/aws-nitro-enclaves-cli at tag v1.5.0 (commit 2950b36); the comment
next to each says where (file:line at that tag). The stand-in prints them exactly as nitro-cli does,
so the real backend's parsing is tested against what nitro-cli really prints, not against what
nitrodeck's emulator prints. (The emulator-fidelity work of issue 11 may add a shared texts module;
this one holds only what the real-mode suite needs.)
"""

from __future__ import annotations

VERSION = "1.5.0"
#: src/lib.rs create_app! (clap `version`), printed by --version as "Nitro CLI 1.5.0"
VERSION_LINE = f"Nitro CLI {VERSION}"

#: src/common/document_errors.rs:343 construct_help_link
HELP_LINK = "https://docs.aws.amazon.com/enclaves/latest/user/cli-errors.html#{code}"

#: src/common/document_errors.rs get_detailed_info (the text after "[ Exx ] "); {0}, {1}, ... are the
#: failure's additional_info values (MISSING_INFO when absent)
DETAILS = {
    # document_errors.rs:134
    "E11": "Socket error. This is used as an error for catching any other socket operation errors not covered by "
    "previous custom errors.",
    # document_errors.rs:158-169 (with two info values: the File: line)
    "E19": "File operation failure. Such error appears when the system fails to perform the requested file "
    "operations, such as opening the EIF file when launching an enclave, or seeking to a specific offset in the "
    "EIF file, or writing to the log file.\nFile: '{0}', failing operation: '{1}'.",
    # document_errors.rs:171
    "E20": "Invalid CPU configuration. User provided `{0}` contains same CPU(s) (CPU(s) {1}) multiple times.",
    # document_errors.rs:181
    "E21": "No such CPU available in the pool. User provided `{0}` contains CPU {1}, which is not available in the "
    "pool.\nYou can add a specific CPU to the CPU pool by editing the `cpu_pool` value from "
    "'/etc/nitro_enclaves/allocator.yaml' and then enable the nitro-enclaves-allocator.service.",
    # document_errors.rs:190
    "E22": "Insufficient CPUs available in the pool. User provided `{0}` is {1}, which is more than the configured "
    "CPU pool size.\nYou can increase the CPU pool size by editing the `cpu_count` value from "
    "'/etc/nitro_enclaves/allocator.yaml' and then enable the nitro-enclaves-allocator.service.",
    # document_errors.rs:208-217 (three info values)
    "E26": "Insufficient memory requested. User provided `{0}` is {1} MB, but based on the EIF file size, the "
    "minimum memory should be {2} MB",
    # document_errors.rs:228
    "E27": "Insufficient memory available. User provided `{0}` is {1} MB, which is more than the available "
    "hugepage memory.\nYou can increase the available memory by editing the `memory_mib` value from "
    "'/etc/nitro_enclaves/allocator.yaml' and then restart the nitro-enclaves-allocator.service.",
    # document_errors.rs:240
    "E29": "Ioctl failure. Such error is used as a general ioctl error and appears whenever an ioctl fails. In "
    "this case, the error backtrace provides detailed information on what specifically failed during the ioctl.",
    # document_errors.rs:258
    "E35": "EIF file parsing error. Such errors appear when attempting to fill a memory region with a section of "
    "the EIF file, but reading the entire section fails. This might indicate that the required hugepages are not "
    "available.",
    # document_errors.rs:270
    "E39": "Enclave process connection failure. Such error appears when the enclave manager fails to connect to "
    "at least one enclave process for retrieving the description information.",
    # document_errors.rs:289
    "E44": "Enclave console connection failure. Such error appears when the Nitro CLI process fails to establish "
    "a connection to a running enclave's console.",
    # document_errors.rs:301
    "E48": "EIF building error. Such error appears when trying to build an EIF file. In this case, the error "
    "backtrace provides detailed information on the failure reason.",
    # document_errors.rs:304
    "E49": "Docker image build error. Such error appears when trying to build and EIF file, but building the "
    "corresponding docker image fails. In this case, the error backtrace provides detailed information on the "
    "failure reason.",
    # document_errors.rs:307 (sic: "informatino")
    "E50": "Docker image pull error. Such error appears when trying to build an EIF file, but pulling the "
    "corresponding docker image fails. In this case, the error backtrace provides detailed informatino on the "
    "failure reason.",
    # document_errors.rs:331
    "E58": "Naming error. Such error appears when trying to perform an enclave operation using the enclave name "
    "and the name is invalid.",
}

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
