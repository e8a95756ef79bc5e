"""Test-suite settings.

The quiet guard (fastdeepiot.devices.quiet) waits for a busy machine to calm down before timing; the
suite tests storage, plumbing and models, not timing quality, so it runs without it (subprocesses
inherit this). tests/test_quiet.py tests the guard itself with injected probes and one real probe.
"""

import os

os.environ.setdefault("FASTDEEPIOT_QUIET_GUARD", "0")
