"""One module per sub-command, each with ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``."""

from . import bench, build_engine, demo, evaluate, export, export_openvino, export_triton, predict, train, view

COMMANDS = (train, export, evaluate, build_engine, export_openvino, export_triton, predict, view, bench, demo)
"""The sub-commands, in the order ``rdedge --help`` lists them."""
