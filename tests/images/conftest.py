"""`images/` is a folder of the checkout, not an installed package: `python -m pytest` finds it
from the working directory, the `pytest` script does not, so put the checkout on the path."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
