"""The ``fusedense`` command: ``fusedense <subcommand> [options]`` (also ``python -m fusedense``).

Each subcommand is a module with ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args)``
returning the exit code, and optionally ``check(args)``, which raises ``options.UsageError`` for
flags that cannot work together; add one by listing it in ``COMMANDS``. Every flag is checked
before ``run`` starts: a bad one exits with code 2 and one line on stderr naming it.
"""
from __future__ import annotations

import argparse
import importlib

from .options import UsageError

#: subcommand → module implementing it
COMMANDS = {
    "demo": "fusedense.cli.demo",
    "bench": "fusedense.cli.bench",
    "lm": "fusedense.cli.lm",
}


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (argparse prints the whole usage first, which buries the message
    under dozens of options)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv=None) -> int:
    parser = _Parser(prog="fusedense", description="fused CPU kernels for dense neural networks")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules, parsers = {}, {}
    for name, module_name in COMMANDS.items():
        module = modules[name] = importlib.import_module(module_name)
        parsers[name] = subcommands.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(parsers[name])
    args = parser.parse_args(argv)
    module = modules[args.command]
    try:
        if hasattr(module, "check"):
            module.check(args)
    except UsageError as exc:
        parsers[args.command].error(str(exc))
    return module.run(args)
