"""The ``rdedge`` entry point: one parser, a sub-command per module of :mod:`rdedge.commands`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sdk.errors import RdedgeError

from .commands import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    """The ``rdedge`` parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="rdedge",
        description="Reverse-distillation anomaly detection: train on good images, export one ONNX graph, detect.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.NAME, help=command.HELP, description=command.HELP)
        command.add_arguments(p)
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.set_defaults(handler=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rdedge`` console script: every refusal is one line on stderr and exit status 2; Ctrl-C
    is one line (what was kept) and exit status 130."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (RdedgeError, ValueError, FileNotFoundError) as exc:
        print(f"rdedge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C: say what was kept (training does), exit as shells expect
        print(f"rdedge {args.command}: interrupted{f': {exc}' if str(exc) else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
