"""nitro-cli 1.5.0's error texts, as data, for the conformance tests.

Taken from aws/aws-nitro-enclaves-cli at tag v1.5.0; each entry names its file and line. ``{}`` marks
a parameter that nitro-cli formats in. Held here independently of emulator/, so that a test compares
the emulator's output with nitro-cli's text and not with itself.
"""

from __future__ import annotations

DOC = "src/common/document_errors.rs"

# get_detailed_info(): the text after "[ Exx ] "
DETAIL: dict[str, str] = {
    # document_errors.rs:82
    'E00': 'Unspecified error. This is used as a catch-all error and should not be used in the code.',
    # document_errors.rs:87
    'E01': 'Missing mandatory argument. User did not provide the `{}` argument.',
    # document_errors.rs:96
    'E02': 'Conflicting arguments. User provided both `{}` and `{}`.',
    # document_errors.rs:106
    'E03': 'Invalid argument provided. The parameter `{}` is not a valid integer (`{}`)',
    # document_errors.rs:114
    'E04': 'Socket pair creation failure. Such error appears when the Nitro CLI process attempts to open a stream pair in order to send a command to the enclave process but the stream initialization fails.',
    # document_errors.rs:117
    'E05': 'Process spawn failure. Such error appears when the main Nitro CLI process fails to spawn the enclave process, in order to complete a `run-enclave` command.',
    # document_errors.rs:120
    'E06': 'Daemonize process failure. Such error appears when the system fails to daemonize a newly spawned enclave process.',
    # document_errors.rs:123
    'E07': "Read from disk failure. Such error appears when the Nitro CLI process fails to read the content of the enclave sockets directory (usually '/run/nitro_enclaves/') in order to perform a `describe-enclave` operation. Check that the directory exists and it has proper permissions, or run the Nitro Enclaves configuration script in order to (re)configure the environment.",
    # document_errors.rs:126
    'E08': 'Unusable connection error. Such error appears when the Nitro CLI process attempts to open a connection to a non-existing or previously closed enclave descriptor',
    # document_errors.rs:129
    'E09': 'Socket close error. Such error appears when the system fails to successfully close a communication channel.',
    # document_errors.rs:132
    'E10': "Socket connect set timeout error. Such error appears when the system fails to configure a specific timeout for a given socket. May arise when trying to connect to an enclave's console.",
    # document_errors.rs:135
    'E11': 'Socket error. This is used as an error for catching any other socket operation errors not covered by previous custom errors.',
    # document_errors.rs:138
    'E12': 'Epoll error. Such error appears, for instance, when the system fails to register a specific enclave descriptor with epoll in order to monitor events for it.',
    # document_errors.rs:141
    'E13': 'Inotify error. Such error appears when the system fails to configure a socket for monitorization.',
    # document_errors.rs:144
    'E14': 'Invalid command. Such error appears when an unknown command and / or unknown arguments are sent through a socket.',
    # document_errors.rs:147
    'E15': 'Lock acquire failure. Such error appears when the system fails to obtain the lock for an object with concurrent access, such as a structure containing information about a running enclave.',
    # document_errors.rs:150
    'E16': 'Thread join failure. Such error appears when the system fails to successfully join a thread, after it finished executing.',
    # document_errors.rs:153
    'E17': 'Serde error. Such error appears when serializing / deserializing a command or response fails.',
    # document_errors.rs:156
    'E18': "File permissions error. Such error appears when a user other than the owner of the logging file (usually '/var/log/nitro_enclaves/nitro_enclaves.log') attempts to change the file permissions",
    # document_errors.rs:159
    'E19': 'File operation failure. Such error appears when the system fails to perform the requested file operations, such as opening the EIF file when launching an enclave, or seeking to a specific offset in the EIF file, or writing to the log file.',
    # document_errors.rs:174
    'E20': 'Invalid CPU configuration. User provided `{}` contains same CPU(s) (CPU(s) {}) multiple times.',
    # document_errors.rs:184
    'E21': "No such CPU available in the pool. User provided `{}` contains CPU {}, which is not available in the pool.\nYou can add a specific CPU to the CPU pool by editing the `cpu_pool` value from '/etc/nitro_enclaves/allocator.yaml' and then enable the nitro-enclaves-allocator.service.",
    # document_errors.rs:193
    'E22': "Insufficient CPUs available in the pool. User provided `{}` is {}, which is more than the configured CPU pool size.\nYou can increase the CPU pool size by editing the `cpu_count` value from '/etc/nitro_enclaves/allocator.yaml' and then enable the nitro-enclaves-allocator.service.",
    # document_errors.rs:200
    'E23': 'Malformed CPU ID error. Such error appears when a `lscpu` line is malformed and reports an invalid online CPUs list.',
    # document_errors.rs:203
    'E24': 'CPU error. Such error appears when a CPU line interval is invalid (for instance, 0-3-7)',
    # document_errors.rs:206
    'E25': 'No such hugepage flag error. Such error appears when the enclave process attempts to use an invalid hugepage size (size other than the known hugepage sizes) for initializing the enclave memory.',
    # document_errors.rs:212
    'E26': 'Insufficient memory requested. User provided `{}` is {} MB, but based on the EIF file size, the minimum memory should be {} MB',
    # document_errors.rs:231
    'E27': "Insufficient memory available. User provided `{}` is {} MB, which is more than the available hugepage memory.\nYou can increase the available memory by editing the `memory_mib` value from '/etc/nitro_enclaves/allocator.yaml' and then restart the nitro-enclaves-allocator.service.",
    # document_errors.rs:238
    'E28': 'Invalid enclave descriptor. Such error appears when the NE_CREATE_VM ioctl returns with an error.',
    # document_errors.rs:241
    'E29': 'Ioctl failure. Such error is used as a general ioctl error and appears whenever an ioctl fails. In this case, the error backtrace provides detailed information on what specifically failed during the ioctl.',
    # document_errors.rs:244
    'E30': 'Ioctl image get load info failure. Such error appears when the ioctl used for getting the memory load information fails. In this case, the error backtrace provides detailed information on what specifically failed during the ioctl.',
    # document_errors.rs:247
    'E31': 'Ioctl set memory region failure. Such error appears when the ioctl used for setting a given memory region fails. In this case, the error backtrace provides detailed information on what specifically failed during the ioctl.',
    # document_errors.rs:250
    'E32': 'Ioctl add vCPU failure. Such error appears when the ioctl used for adding a vCPU fails. In this case, the error backtrace provides detailed information on what specifically failed during the ioctl.',
    # document_errors.rs:253
    'E33': 'Ioctl start enclave failure. Such error appears when the ioctl used for starting an enclave fails. In this case, the error backtrace provides details information on what specifically failed during the ioctl.',
    # document_errors.rs:256
    'E34': 'Memory overflow. Such error may appear during loading the EIF in the memory regions which will be conceded to the future enclave, if the regions offset plus the EIF file size exceeds the maximum address of the target platform.',
    # document_errors.rs:259
    'E35': 'EIF file parsing error. Such errors appear when attempting to fill a memory region with a section of the EIF file, but reading the entire section fails. This might indicate that the required hugepages are not available.',
    # document_errors.rs:262
    'E36': 'Enclave boot failure. Such error appears when attempting to receive the `ready` signal from a freshly booted enclave. It arises in several contexts, for instance, when the enclave is booted from an invalid EIF file and the enclave process immediately exits, failing to submit the `ready` signal. In this case, the error backtrace provides detailed information on what specifically failed during the enclave boot process.',
    # document_errors.rs:265
    'E37': 'Enclave event wait error. Such error appears when monitoring an enclave descriptor for events fails.',
    # document_errors.rs:268
    'E38': 'Enclave process command not executed error. Such error appears when at least one enclave fails to provide the description information.',
    # document_errors.rs:271
    'E39': 'Enclave process connection failure. Such error appears when the enclave manager fails to connect to at least one enclave process for retrieving the description information.',
    # document_errors.rs:274
    'E40': 'Socket path not found. Such error appears when the Nitro CLI process fails to build the corresponding socket path starting from a given enclave ID.',
    # document_errors.rs:277
    'E41': 'Enclave process send reply failure. Such error appears when the enclave process fails to submit the status code to the Nitro CLI process after performing a run / describe / terminate command.',
    # document_errors.rs:281
    'E42': 'Enclave mmap error. Such error appears when allocating the enclave memory fails.',
    # document_errors.rs:286
    'E43': 'Enclave munmap error. Such error appears when unmapping the enclave memory fails.',
    # document_errors.rs:290
    'E44': "Enclave console connection failure. Such error appears when the Nitro CLI process fails to establish a connection to a running enclave's console.",
    # document_errors.rs:293
    'E45': "Enclave console read error. Such error appears when reading from a running enclave's console fails.",
    # document_errors.rs:296
    'E46': "Enclave console write output error. Such error appears when writing the information retrieved from a running enclave's console (to a given stream) fails.",
    # document_errors.rs:299
    'E47': "Integer parsing error. Such error appears when trying to connect to a running enclave's console, but the enclave CID cannot be parsed correctly.",
    # document_errors.rs:302
    'E48': 'EIF building error. Such error appears when trying to build an EIF file. In this case, the error backtrace provides detailed information on the failure reason.',
    # document_errors.rs:305
    'E49': 'Docker image build error. Such error appears when trying to build and EIF file, but building the corresponding docker image fails. In this case, the error backtrace provides detailed information on the failure reason.',
    # document_errors.rs:308
    'E50': 'Docker image pull error. Such error appears when trying to build an EIF file, but pulling the corresponding docker image fails. In this case, the error backtrace provides detailed informatino on the failure reason.',
    # document_errors.rs:311
    'E51': 'Artifacts path environment variable not set. Such error appears when trying to build an EIF file, but the artifacts path environment variable is not set.',
    # document_errors.rs:314
    'E52': 'Blobs path environment variable not set. Such error appears when trying to build an EIF file, but the blobs path environment variable is not set.',
    # document_errors.rs:317
    'E53': "Clock skew error. Such error appears when continuously reading from a running enclave's console, but measuring the time elapsed between consecutive reads failed.",
    # document_errors.rs:320
    'E54': 'Signal masking error. Such error appears if attempting to mask specific signals before creating an enclave process fails.',
    # document_errors.rs:323
    'E55': 'Signal unmasking error. Such error appears if attempting to unmask specific signals after creating an enclave process fails.',
    # document_errors.rs:326
    'E56': 'Logger error. Such error appears when attempting to initialize the underlying logging system fails.',
    # document_errors.rs:329
    'E57': 'Hasher error. Such error appears when trying to initialize a hasher or write bytes to it, resulting in a IO error.',
    # document_errors.rs:332
    'E58': 'Naming error. Such error appears when trying to perform an enclave operation using the enclave name and the name is invalid.',
    # document_errors.rs:335
    'E59': 'EIF signature checker error. Such error appears when validation of the signing certificate fails.',
    # document_errors.rs:338
    'E60': 'Signing error. Such error appears if incorrect key or certificate paths are provided, or when AWS credenrials need to be refreshed to use a KMS key.',
}
# document_errors.rs:163 (appended to E19 when a path and an operation are known)
DETAIL_E19_FILE = "\nFile: '{}', failing operation: '{}'."
# document_errors.rs:221 (E26 with two parameters)
DETAIL_E26_ZERO = 'Insufficient memory requested. User provided `{}` is {} MB, and memory should be greater than 0 MB.'
# document_errors.rs:341 and :551
UNKNOWN_CODE = "No such error code {}"

# explain_error(): printed on stderr with a newline (eprintln!), exit 0
EXPLAIN: dict[str, str] = {
    # document_errors.rs:371
    'E00': 'Unspecified error. This is used as a catch-all error and should not be used in the code.',
    # document_errors.rs:374
    'E01': 'Missing mandatory argument. Such error appears when the Nitro CLI is requested to perform an operation, but not all of the mandatory arguments were supplied.\n\tExample: `nitro-cli run-enclave --cpu-count 2 --eif-path /path/to/my/eif`. Note that in this case, the mandatory parameter `--memory` is missing a value.',
    # document_errors.rs:377
    'E02': 'CLI conflicting arguments. Such error appears when the Nitro CLI is supplied two contradicting arguments at the same time, such as `--cpu-count` and `--cpu-ids`.\nIn this case, only one of the parameters should be supplied.',
    # document_errors.rs:380
    'E03': 'Invalid argument provided. Such error appears when the type of at least one of the arguments provided to the Nitro CLI does not match the expected type of that parameter.\n\tExample: `nitro-cli run-enclave --cpu-count 1z --memory 80 --eif-path /path/to/my/eif`. In this case, `cpu-count` is not a valid integer value.',
    # document_errors.rs:383
    'E04': 'Socket pair creation failure. Such error apears when the Nitro CLI process attempts to open a stream pair in order to send a command to the enclave process, but the stream initialization fails.',
    # document_errors.rs:386
    'E05': 'Process spawn failure. Such error appears when the main Nitro CLI process failed to spawn the enclave process, in order to complete a `run-enclave` command.',
    # document_errors.rs:389
    'E06': 'Daemonize process failure. Such error appears when the system fails to daemonize the newly spawned enclave process.',
    # document_errors.rs:392
    'E07': "Read from disk failure. Such error appears when the Nitro CLI process fails to read the content of the enclave sockets directory (usually '/run/nitro_enclaves/') in order to perform a `describe-enclave` operation. Check that the directory exists and it has proper permissions, or run the Nitro Enclaves configuration script in order to (re)configure the environment.",
    # document_errors.rs:395
    'E08': 'Unusable connection error. Such error appears when the Nitro CLI process attempts to open a connection to a non-existing or previously closed enclave descriptor',
    # document_errors.rs:398
    'E09': 'Socket close error. Such error appears when the system fails to successfully close a communication channel.',
    # document_errors.rs:401
    'E10': "Socket connect set timeout error. Such error appears when the system fails to configure a specific timeout for a given socket. May arise when trying to connect to an enclave's console.",
    # document_errors.rs:404
    'E11': 'Socket error. This is used as an error for catching any other socket operation errors not covered by previous custom errors.',
    # document_errors.rs:407
    'E12': 'Epoll error. Such error appears, for instance, when the system fails to register a specific enclave descriptor with epoll in order to monitor events for it.',
    # document_errors.rs:410
    'E13': 'Inotify error. Such error appears when the system fails to configure a socket for monitorization.',
    # document_errors.rs:413
    'E14': 'Invalid command. Such error appears when an unknown command and / or unknown arguments are sent through a socket.',
    # document_errors.rs:416
    'E15': 'Lock acquire failure. Such error appears when the system fails to obtain the lock for an object with concurrent access, such as a structure containing information about a running enclave.',
    # document_errors.rs:419
    'E16': 'Thread join failure. Such error appears when the system fails to successfully join a thread, after it finished executing.',
    # document_errors.rs:422
    'E17': 'Serde error. Such error appears when serializing / deserializing a command or response fails.',
    # document_errors.rs:425
    'E18': "File permissions error. Such error appears when a user other than the owner of the logging file (usually '/var/log/nitro_enclaves/nitro_enclaves.log') attempts to change the file permissions",
    # document_errors.rs:428
    'E19': 'File operation failure. Such error appears when the system fails to perform the requested file operations, such as opening the EIF file when launching an enclave, or seeking to a specific offset in the EIF file, or writing to the log file.',
    # document_errors.rs:431
    'E20': 'Invalid CPU configuration. Such error appears when the user supplies the same CPU ID multiple times.\n\tExample: `nitro-cli run-enclave --cpu-ids 1 1 --memory 80 --eif-path /path/to/my/eif`. In this case, CPU ID `1` has been selected twice.',
    # document_errors.rs:434
    'E21': 'No such CPU available in the pool. Such error appears when the user requests to run an enclave with at least one CPU ID which does not exist in the CPU pool.\n\tExample: (configured CPU pool: [1,9]) `nitro-cli run-enclave --cpu-ids 1 2 --memory 80 --eif-path /path/to/my/eif`. In this case, CPU 2 is not in the configured CPU pool.',
    # document_errors.rs:437
    'E22': 'Insufficient CPUs available in the pool. Such error appears when the user requests to run an enclave with more CPUs that available in the CPU pool.\n\tExample: (configured CPU pool: [1,9]) `nitro-cli run-enclave --cpu-count 4 --memory 80 --eif-path /path/to/my/eif`. In this case, the user requested 4 CPUs, but the CPU pool contains only 2.',
    # document_errors.rs:440
    'E23': 'Malformed CPU ID error. Such error appears when a `lscpu` line is malformed and reports an invalid online CPUs list.',
    # document_errors.rs:444
    'E24': 'CPU error. Such error appears when a CPU line interval is invalid (as in 0-3-7)',
    # document_errors.rs:448
    'E25': 'No such hugepage flag error. Such error appears when the enclave process attempts to use an invalid hugepage size (size other than the known hugepage sizes) for initializing the enclave memory.',
    # document_errors.rs:451
    'E26': 'Insufficient memory requested. Such error appears when the user requests to launch an enclave with not enough memory. The enclave memory should be at least equal to the size of the EIF file used for launching the enclave.\n\tExample: (EIF file size: 11MB) `nitro-cli run-enclave --cpu-count 2 --memory 5 --eif-path /path/to/my/eif`. In this case, the user requested to run an enclave with only 5MB of memory, whereas the EIF file alone requires 11MB.',
    # document_errors.rs:454
    'E27': 'Insufficient memory available. Such error appears when the user requests to launch an enclave with more memory than available. The enclave memory should be at most equal to the size of the configured hugepage memory.\n\tExample: (previously configured 80MB of hugepage memory) `nitro-cli run-enclave --cpu-count 2 --memory 100 --eif-path /path/to/my/eif`. In this case, the user requested to run an enclave with 100MB of memory, whereas the system has only 80MB available for enclaves. As a solution, (re)configure the Nitro Enclaves environment, specifying a higher value for the available memory.',
    # document_errors.rs:457
    'E28': 'Invalid enclave descriptor. Such error appears when the NE_CREATE_VM ioctl returns with an error.',
    # document_errors.rs:460
    'E29': 'Ioctl failure. Such error is used as a general ioctl error and appears whenever an ioctl fails. In this case, the error backtrace provides detailed information on what specifically failed during the ioctl.',
    # document_errors.rs:463
    'E30': 'Ioctl image get load info failure. Such error appears when the ioctl used for getting the memory load information fails. In this case, the error backtrace provides detailed information on what specifically failed during the ioctl.',
    # document_errors.rs:466
    'E31': 'Ioctl set memory region failure. Such error appears when the ioctl used for setting a given memory region fails. In this case, the error backtrace provides detailed information on what specifically failed during the ioctl.',
    # document_errors.rs:469
    'E32': 'Ioctl add vCPU failure. Such error appears when the ioctl used for adding a vCPU fails. In this case, the error backtrace provides detailed information on what specifically failed during the ioctl.',
    # document_errors.rs:472
    'E33': 'Ioctl start enclave failure. Such error appears when the ioctl used for starting an enclave fails. In this case, the error backtrace provides details information on what specifically failed during the ioctl.',
    # document_errors.rs:475
    'E34': 'Memory overflow. Such error may appear during loading the EIF in the memory regions which will be conceded to the future enclave, if the regions offset plus the EIF file size exceeds the maximum address of the target platform.',
    # document_errors.rs:478
    'E35': 'EIF file parsing error. Such errors appear when attempting to fill a memory region with a section of the EIF file, but reading the entire section fails. This might indicate that the required hugepages are not available.',
    # document_errors.rs:481
    'E36': 'Enclave boot failure. Such error appears when attempting to receive the `ready` signal from a freshly booted enclave. It arises in several contexts, for instance, when the enclave is booted from an invalid EIF file and the enclave process immediately exits, failing to submit the `ready` signal. In this case, the error backtrace provides detailed information on what specifically failed during the enclave boot process.',
    # document_errors.rs:484
    'E37': 'Enclave event wait error. Such error appears when monitoring an enclave descriptor for events fails.',
    # document_errors.rs:487
    'E38': 'Enclave process command not executed error. Such error appears when at least one enclave fails to provide the description information.',
    # document_errors.rs:490
    'E39': 'Enclave process connection failure. Such error appears when the enclave manager fails to connect to at least one enclave process for retrieving the description information.',
    # document_errors.rs:493
    'E40': 'Socket path not found. Such error appears when the Nitro CLI process fails to build the corresponding socket path starting from a given enclave ID.',
    # document_errors.rs:496
    'E41': 'Enclave process send reply failure. Such error appears when the enclave process fails to submit the status code to the Nitro CLI process after performing a run / describe / terminate command.',
    # document_errors.rs:500
    'E42': 'Enclave mmap error. Such error appears when allocating the enclave memory fails.',
    # document_errors.rs:505
    'E43': 'Enclave munmap error. Such error appears when unmapping the enclave memory fails.',
    # document_errors.rs:509
    'E44': "Enclave console connection failure. Such error appears when the Nitro CLI process fails to establish a connection to a running enclave's console.",
    # document_errors.rs:512
    'E45': "Enclave console read error. Such error appears when reading from a running enclave's console fails.",
    # document_errors.rs:515
    'E46': "Enclave console write output error. Such error appears when writing the information retrieved from a running enclave's console (to a given stream) fails.",
    # document_errors.rs:518
    'E47': "Integer parsing error. Such error appears when trying to connect to a running enclave's console, but the enclave CID cannot be parsed correctly.",
    # document_errors.rs:521
    'E48': 'EIF building error. Such error appears when trying to build an EIF file. In this case, the error backtrace provides detailed information on the failure reason.',
    # document_errors.rs:524
    'E49': 'Docker image build error. Such error appears when trying to build and EIF file, but building the corresponding docker image fails. In this case, the error backtrace provides detailed information on the failure reason.',
    # document_errors.rs:527
    'E50': 'Docker image pull error. Such error appears when trying to build an EIF file, but pulling the corresponding docker image fails. In this case, the error backtrace provides detailed informatino on the failure reason.',
    # document_errors.rs:530
    'E51': 'Artifacts path environment variable not set. Such error appears when trying to build an EIF file, but the artifacts path environment variable is not set.',
    # document_errors.rs:533
    'E52': 'Blobs path environment variable not set. Such error appears when trying to build an EIF file, but the blobs path environment variable is not set.',
    # document_errors.rs:536
    'E53': "Clock skew error. Such error appears when continuously reading from a running enclave's console, but measuring the time elapsed between consecutive reads failed.",
    # document_errors.rs:539
    'E54': 'Signal masking error. Such error appears if attempting to mask specific signals before creating an enclave process fails.',
    # document_errors.rs:542
    'E55': 'Signal unmasking error. Such error appears if attempting to unmask specific signals after creating an enclave process fails.',
    # document_errors.rs:545
    'E56': 'Logger error. Such error appears when attempting to initialize the underlying logging system fails.',
    # document_errors.rs:548
    'E60': 'Signing error. Such error appears if incorrect key or certificate paths are provided, or when AWS credenrials need to be refreshed to use a KMS key.',
}
