"""`python -m tests.execute.isolated_cli ...`: the slmrec CLI with the shipped KB replaced by the
folder in $SLMREC_TEST_KB and the test runners registered (for subprocess tests)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    import runners.registry
    import slmrec.kb
    from slmrec.cli import main
    from tests.execute.conftest import TEST_RUNNERS

    slmrec.kb.SHIPPED_KB = Path(os.environ["SLMREC_TEST_KB"])
    runners.registry.RUNNERS.update(TEST_RUNNERS)
    sys.exit(main(sys.argv[1:]))
