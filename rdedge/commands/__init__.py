"""One module per sub-command, each with ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``."""

from . import bench, build_engine, demo, evaluate, export, predict, train

COMMANDS = (train, export, evaluate, build_engine, predict, bench, demo)
"""The sub-commands, in the order ``rdedge --help`` lists them."""
