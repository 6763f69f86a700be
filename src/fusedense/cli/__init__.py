"""The ``fusedense`` command: ``fusedense <subcommand> [options]`` (also ``python -m fusedense``).

Each subcommand is a module with ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args)``
returning the exit code; add one by listing it in ``COMMANDS``.
"""
from __future__ import annotations

import argparse
import importlib

#: subcommand → module implementing it
COMMANDS = {
    "demo": "fusedense.cli.demo",
    "bench": "fusedense.cli.bench",
    "lm": "fusedense.cli.lm",
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fusedense", description="fused CPU kernels for dense neural networks")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules = {}
    for name, module_name in COMMANDS.items():
        module = modules[name] = importlib.import_module(module_name)
        module.add_arguments(subcommands.add_parser(name, help=module.HELP, description=module.HELP))
    args = parser.parse_args(argv)
    return modules[args.command].run(args)
