"""The ``edgemesh`` command line (DESIGN §5).

The only package that knows about argv, exit codes and printing.  Each command parses
its options, calls into the library, and prints either human-readable lines or, with
``--json``, exactly one JSON object on stdout.  Every :class:`~mesh.errors.EdgemeshError`
and every usage mistake becomes one line on stderr and a non-zero exit status (1 for
a failed operation, 2 for a usage error); a traceback means a bug in edgemesh.

One module per command group registers its commands on the shared click group
(:mod:`mesh.cli._common`); importing them here is what makes them appear.
"""

from __future__ import annotations

import os
import sys

import click

from mesh.cli import demo, inference, node, release, simulate
from mesh.cli._common import EXIT_FAILED, EXIT_USAGE, Failed, cli
from mesh.errors import EdgemeshError

__all__ = ["cli", "demo", "inference", "main", "node", "release", "simulate"]


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, map errors to one stderr line and an exit status."""
    args = sys.argv[1:] if argv is None else argv
    prog = "edgemesh"
    try:
        cli.main(args=args, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        click.echo(f"{prog}: interrupted", err=True)
        return 130
    except click.UsageError as e:
        where = e.ctx.command_path if e.ctx is not None else prog
        click.echo(f"{where}: error: {e.format_message()} (see '{where} --help')", err=True)
        return EXIT_USAGE
    except click.ClickException as e:
        click.echo(f"{prog}: error: {e.format_message()}", err=True)
        return e.exit_code
    except (EdgemeshError, Failed) as e:
        click.echo(f"{prog}: error: {e}", err=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        click.echo(f"{prog}: interrupted", err=True)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
