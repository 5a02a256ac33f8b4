"""The operator image installs only `pagoda[operator]`: the operator must never import the
worker's heavy dependencies."""

import subprocess
import sys

PROBE = """
import sys
import pagoda.cli, pagoda.commands.operator, pagoda_operator.main, pagoda_operator.handlers
heavy = {"torch", "transformers", "safetensors"} & set(sys.modules)
assert not heavy, heavy
"""


def test_operator_imports_no_worker_dependencies():
    subprocess.run([sys.executable, "-c", PROBE], check=True, timeout=60)
