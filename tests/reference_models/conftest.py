"""Make the standalone reference model's package importable (it lives outside ``flare_eval``)."""

from __future__ import annotations

import sys
from pathlib import Path

CASCADE_DIR = Path(__file__).resolve().parents[2] / "reference_models" / "cascade"
if str(CASCADE_DIR) not in sys.path:
    sys.path.insert(0, str(CASCADE_DIR))
