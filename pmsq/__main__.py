"""``python -m pmsq``."""

import sys

from pmsq.cli import main

sys.exit(main())
