"""nitro-cli's error codes E00..E60: the printed detail line, the `explain` text, and the typed error.

The detail line (``[ Exx ] <message>``) keeps nitro-cli 1.5.0's wording for the parts scripts match
on; the explain texts are our own short descriptions. A code's exit status is its number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.errors import NitrodeckError

HELP_URL = "https://docs.aws.amazon.com/enclaves/latest/user/cli-errors.html#{code}"
MISSING = "MISSING_INFO"

# code -> message without parameters (parameterised ones are built in :func:`detail`)
TITLES: dict[str, str] = {
    "E00": "Unspecified error. This is used as a catch-all error and should not be used in the code.",
    "E01": "Missing mandatory argument.",
    "E02": "Conflicting arguments.",
    "E03": "Invalid argument provided.",
    "E04": "Socket pair creation failure.",
    "E05": "Process spawn failure.",
    "E06": "Daemonize process failure.",
    "E07": "Read from disk failure.",
    "E08": "Unusable connection error.",
    "E09": "Socket close error.",
    "E10": "Socket connect set timeout error.",
    "E11": "Socket error. This is used as an error for catching any other socket operation errors not covered by previous custom errors.",
    "E12": "Epoll error.",
    "E13": "Inotify error.",
    "E14": "Invalid command.",
    "E15": "Lock acquire failure.",
    "E16": "Thread join failure.",
    "E17": "Serde error.",
    "E18": "File permissions error.",
    "E19": "File operation failure.",
    "E20": "Invalid CPU configuration.",
    "E21": "No such CPU available in the pool.",
    "E22": "Insufficient CPUs available in the pool.",
    "E23": "Malformed CPU ID error.",
    "E24": "CPU error.",
    "E25": "No such hugepage flag error.",
    "E26": "Insufficient memory requested.",
    "E27": "Insufficient memory available.",
    "E28": "Invalid enclave descriptor.",
    "E29": "Ioctl failure.",
    "E30": "Ioctl image get load info failure.",
    "E31": "Ioctl set memory region failure.",
    "E32": "Ioctl add vCPU failure.",
    "E33": "Ioctl start enclave failure.",
    "E34": "Memory overflow.",
    "E35": "EIF file parsing error.",
    "E36": "Enclave boot failure.",
    "E37": "Enclave event wait error.",
    "E38": "Enclave process command not executed error.",
    "E39": "Enclave process connection failure.",
    "E40": "Socket path not found.",
    "E41": "Enclave process send reply failure.",
    "E42": "Enclave mmap error.",
    "E43": "Enclave munmap error.",
    "E44": "Enclave console connection failure.",
    "E45": "Enclave console read error.",
    "E46": "Enclave console write output error.",
    "E47": "Integer parsing error.",
    "E48": "EIF building error.",
    "E49": "Docker image build error.",
    "E50": "Docker image pull error.",
    "E51": "Artifacts path environment variable not set.",
    "E52": "Blobs path environment variable not set.",
    "E53": "Clock skew error.",
    "E54": "Signal masking error.",
    "E55": "Signal unmasking error.",
    "E56": "Logger error.",
    "E57": "Hasher error.",
    "E58": "Naming error.",
    "E59": "EIF signature checker error.",
    "E60": "Signing error.",
}

# code -> what `explain` prints (own words; E57-E59 have none in nitro-cli 1.5.0, as there)
EXPLAIN: dict[str, str] = {
    "E00": "A failure that has no more specific code.",
    "E01": "A mandatory argument is missing, e.g. run-enclave without --memory, or a --config file without cpu_count/cpu_ids.",
    "E02": "Two arguments that exclude each other were given, e.g. both cpu_count and cpu_ids.",
    "E03": "An argument has the wrong type or value, e.g. --memory 256_mb or an enclave CID reserved for the host.",
    "E04": "The channel to the enclave process could not be created.",
    "E05": "The enclave process could not be started.",
    "E06": "The enclave process could not be daemonized.",
    "E07": "The enclave sockets directory could not be read.",
    "E08": "A connection to an enclave process was unusable (closed or missing).",
    "E09": "A socket could not be closed.",
    "E10": "A socket timeout could not be set (console connection).",
    "E11": "A socket operation failed, typically because no enclave with the given ID exists.",
    "E12": "Monitoring an enclave descriptor failed.",
    "E13": "Watching the sockets directory failed.",
    "E14": "An enclave process received an unknown command.",
    "E15": "A lock on shared enclave state could not be taken.",
    "E16": "A worker thread could not be joined.",
    "E17": "Serializing or deserializing a command, reply or --config JSON failed.",
    "E18": "The log file permissions could not be changed.",
    "E19": "A file operation failed, e.g. the EIF or the --config file could not be opened.",
    "E20": "The same CPU ID was given more than once in --cpu-ids.",
    "E21": "A CPU ID given in --cpu-ids is not in the enclave CPU pool (allocator.yaml).",
    "E22": "More CPUs were requested than the enclave CPU pool holds (allocator.yaml cpu_count/cpu_pool).",
    "E23": "A CPU list line could not be parsed.",
    "E24": "A CPU interval is invalid (e.g. 0-3-7).",
    "E25": "An unknown hugepage size was used for enclave memory.",
    "E26": "The requested memory is below four times the EIF size (or zero).",
    "E27": "The requested memory exceeds the free hugepage memory reserved for enclaves (allocator.yaml memory_mib).",
    "E28": "Creating the enclave failed (in the emulator: the instance already runs its maximum of 4 enclaves).",
    "E29": "A driver request failed: odd CPU count with hyperthreading, CPU count 0, CPUs exhausted, memory below 64 MiB, CID in use. The error log names the cause.",
    "E30": "Getting the image load offset failed.",
    "E31": "Adding a memory region to the enclave failed.",
    "E32": "Adding a vCPU to the enclave failed.",
    "E33": "Starting the enclave failed.",
    "E34": "The EIF does not fit the enclave memory regions.",
    "E35": "Reading the EIF into enclave memory failed.",
    "E36": "The enclave did not send its boot heartbeat (0xB7), e.g. its command could not be started.",
    "E37": "Waiting for enclave events failed.",
    "E38": "An enclave process did not run the requested command.",
    "E39": "The CLI got no usable reply from an enclave process (run-enclave: the enclave process reported an error above).",
    "E40": "No socket path could be derived from the enclave ID.",
    "E41": "The enclave process could not send its reply.",
    "E42": "Mapping enclave memory failed.",
    "E43": "Unmapping enclave memory failed.",
    "E44": "The console could not be connected; the enclave must run with --debug-mode.",
    "E45": "Reading the console failed.",
    "E46": "Writing console output failed.",
    "E47": "The enclave CID could not be parsed.",
    "E48": "Building the EIF failed; the error log names the cause.",
    "E49": "Building the Docker image failed.",
    "E50": "Pulling the Docker image failed.",
    "E51": "Neither NITRO_CLI_ARTIFACTS nor HOME is set.",
    "E52": "The blobs path is not set.",
    "E53": "The clock went backwards while reading the console.",
    "E54": "Masking signals failed.",
    "E55": "Unmasking signals failed.",
    "E56": "The logger could not be initialized.",
    "E60": "Signing the EIF failed (bad key, certificate or KMS key).",
}


def detail(code: str, info: list[str]) -> str:
    """The text after ``[ Exx ] ``, with nitro-cli's parameterised forms."""

    def arg(i: int) -> str:
        return info[i] if i < len(info) else MISSING

    if code == "E01":
        return f"Missing mandatory argument. User did not provide the `{arg(0)}` argument."
    if code == "E02":
        return f"Conflicting arguments. User provided both `{arg(0)}` and `{arg(1)}`."
    if code == "E03":
        return f"Invalid argument provided. The parameter `{arg(0)}` is not a valid integer (`{arg(1)}`)"
    if code == "E19" and len(info) >= 2:
        return f"{TITLES['E19']}\nFile: '{arg(0)}', failing operation: '{arg(1)}'."
    if code == "E20":
        return f"Invalid CPU configuration. User provided `{arg(0)}` contains same CPU(s) (CPU(s) {arg(1)}) multiple times."
    if code == "E21":
        return (
            f"No such CPU available in the pool. User provided `{arg(0)}` contains CPU {arg(1)}, which is not "
            "available in the pool.\nYou can add a specific CPU to the CPU pool by editing the `cpu_pool` value "
            "from '/etc/nitro_enclaves/allocator.yaml' and then enable the nitro-enclaves-allocator.service."
        )
    if code == "E22":
        return (
            f"Insufficient CPUs available in the pool. User provided `{arg(0)}` is {arg(1)}, which is more than "
            "the configured CPU pool size.\nYou can increase the CPU pool size by editing the `cpu_count` value "
            "from '/etc/nitro_enclaves/allocator.yaml' and then enable the nitro-enclaves-allocator.service."
        )
    if code == "E26":
        if len(info) >= 3:
            return (
                f"Insufficient memory requested. User provided `{arg(0)}` is {arg(1)} MB, but based on the EIF "
                f"file size, the minimum memory should be {arg(2)} MB"
            )
        return f"Insufficient memory requested. User provided `{arg(0)}` is {arg(1)} MB, and memory should be greater than 0 MB."
    if code == "E27":
        return (
            f"Insufficient memory available. User provided `{arg(0)}` is {arg(1)} MB, which is more than the "
            "available hugepage memory.\nYou can increase the available memory by editing the `memory_mib` value "
            "from '/etc/nitro_enclaves/allocator.yaml' and then restart the nitro-enclaves-allocator.service."
        )
    if code in TITLES:
        return TITLES[code]
    return f"No such error code {code}"


def explain(code: str) -> str:
    if code in EXPLAIN:
        return f"{TITLES[code]} {EXPLAIN[code]}"
    return f"No such error code {code}"


@dataclass
class EmuError(NitrodeckError):
    """A failure reported as nitro-cli's ``[ Exx ]`` block. ``subactions`` go to the err log, innermost last."""

    code: str = "E00"  # type: ignore[misc]
    info: list[str] = field(default_factory=list)
    subactions: list[str] = field(default_factory=list)
    action: str | None = None

    def __post_init__(self) -> None:
        NitrodeckError.__init__(self, detail(self.code, self.info), where=self.action)

    @property
    def exit_status(self) -> int:  # type: ignore[override]
        return int(self.code[1:]) or 1  # E00 must not look like success

    def with_subaction(self, text: str) -> EmuError:
        self.subactions.insert(0, text)
        return self
