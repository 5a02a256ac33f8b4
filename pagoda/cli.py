"""The `pagoda` command: one entry point, one module per subcommand.

Each module in `pagoda.commands` exposes `add_parser(subparsers)` and `run(args) -> int`.
They are imported only when chosen, so `pagoda operator` never loads torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "generate": "Run the engine offline on one prompt and print the completion.",
    "serve": "Serve a model over the OpenAI API (the worker pod's main process).",
    "gateway": "Route OpenAI API traffic to the workers: tenants, limits, affinity, failover.",
    "operator": "Run the Kubernetes operator that reconciles LLMDeployments.",
}


def _command_module(name: str):
    return importlib.import_module(f"pagoda.commands.{name}")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pagoda", description="Serve LLMs on Kubernetes.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    for name, help_text in SUBCOMMANDS.items():
        if name == chosen:
            _command_module(name).add_parser(subparsers, help_text)
        else:
            subparsers.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    return _command_module(args.command).run(args)


if __name__ == "__main__":
    sys.exit(main())
