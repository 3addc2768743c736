"""``python -m enclave_app``: the enclave payload's entry point."""

import sys

from enclave_app.server import main

sys.exit(main())
