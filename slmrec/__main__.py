import sys

from slmrec.cli import main

sys.exit(main())
