"""Let the template's tests run from a checkout without installing it (installed, it is found normally)."""

import sys
from pathlib import Path

try:
    import bids_encoding_template  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
