"""`python -m tests.reliability.isolated_cli ...`: the slmrec CLI with the KB in $SLMREC_TEST_KB
and the test and fault runners registered (for subprocess fault tests)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    import runners.registry
    import slmrec.kb
    from slmrec.cli import main
    from tests.execute.conftest import TEST_RUNNERS
    from tests.reliability.conftest import FAULT_RUNNERS

    slmrec.kb.SHIPPED_KB = Path(os.environ["SLMREC_TEST_KB"])
    runners.registry.RUNNERS.update({**TEST_RUNNERS, **FAULT_RUNNERS})
    sys.exit(main(sys.argv[1:]))
