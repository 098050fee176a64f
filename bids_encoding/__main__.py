"""``python -m bids_encoding`` is the same program as ``bids-encoding``."""

import sys

from .cli import main

sys.exit(main())
