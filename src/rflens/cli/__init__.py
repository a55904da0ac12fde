"""Command-line interface: ``rflens SUBCOMMAND ...``. A thin layer over the library.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` (which registers the
subcommand and sets ``func`` to its ``run(args) -> int``). Errors from bad input are printed on one
line and exit with code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ["trf", "erf", "report", "dense", "tile", "experiment", "zoo"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        self.exit(2, f"rflens: error: {message} (see 'rflens {self.prog.split()[-1]} --help')\n"
                  if " " in self.prog else f"rflens: error: {message} (see 'rflens --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rflens", description="Receptive fields of PyTorch models.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"rflens.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"rflens.cli.{name}":
                continue  # subcommand not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from rflens.errors import RflensError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RflensError as exc:
        if debug:
            raise
        print(f"rflens: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rflens: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an rflens bug, not bad input: still one line unless --debug
        if debug:
            raise
        print(f"rflens: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
              "traceback and report it)", file=sys.stderr)
        return 1
