"""`pagoda operator` is wired into the CLI without importing the worker's heavy dependencies."""

from __future__ import annotations

import subprocess
import sys

from pagoda.cli import build_parser


def test_operator_arguments():
    argv = ["operator", "--kubeconfig", "/k", "--namespace", "a", "--namespace", "b",
            "--standalone", "--metrics-port", "0"]  # fmt: skip
    args = build_parser(argv).parse_args(argv)
    assert args.command == "operator"
    assert (args.kubeconfig, args.namespaces, args.standalone) == ("/k", ["a", "b"], True)
    assert args.metrics_port == 0
    assert args.peering == "pagoda"


def test_operator_does_not_load_torch():
    code = (
        "import sys; from pagoda.cli import build_parser; import pagoda_operator.handlers;"
        " build_parser(['operator']); assert 'torch' not in sys.modules, 'torch loaded'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
