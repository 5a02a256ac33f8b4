"""The `pagoda` command: one entry point, a subcommand per job."""
import sys


def main(argv: list[str] | None = None) -> int:
    print("pagoda: no subcommands yet", file=sys.stderr)
    return 2
