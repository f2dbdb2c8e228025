"""Entry point of the ``sfumato`` command: builds the parser and dispatches.

Exit codes: 0 success, 1 a run failed, 2 bad input (graph, parameters,
usage), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..errors import GraphValidationError, ParameterError, SfumatoError
from ..plugin.limits import LimitExceededError
from . import draw_cmd, info_cmds, run_cmd, upgrade_cmd
from .output import print_error, print_graph_issues

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser(with_plugins: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sfumato",
        description="Run, check and inspect text-to-image workflow graphs.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    run_cmd.add_parsers(subparsers)
    info_cmds.add_parsers(subparsers)
    draw_cmd.add_parsers(subparsers)
    upgrade_cmd.add_parsers(subparsers)
    if with_plugins:
        from ..registry import default_registry

        for plugin, error in default_registry().add_cli_commands(subparsers):
            print_error(f"plugin {plugin!r} could not add its commands: {error}")
    return parser


def _needs_plugin_commands(argv: Sequence[str]) -> bool:
    builtin = {"run", "validate", "nodes", "plugins", "models", "schema", "inspect", "draw", "graphs", "upgrade"}
    first = next((a for a in argv if not a.startswith("-")), None)
    return first is None or first not in builtin


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Plugin subcommands are added only when one may be asked for: building
    # them loads every plugin's CLI hook, which 'validate' should not pay for.
    parser = build_parser(with_plugins=_needs_plugin_commands(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_INVALID
    try:
        return int(args.handler(args) or 0)
    except GraphValidationError as error:
        print_graph_issues(error)
        return EXIT_INVALID
    except (ParameterError, LimitExceededError) as error:
        print_error(str(error))
        return EXIT_INVALID
    except KeyboardInterrupt:
        print_error("interrupted; finished results stay in the cache")
        return EXIT_INTERRUPTED
    except SfumatoError as error:
        print_error(str(error))
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
