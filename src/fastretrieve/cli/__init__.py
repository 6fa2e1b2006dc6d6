"""The ``fastretrieve`` command line: index a folder of images, search it, find duplicates,
evaluate a model, and check the installation.

One module per command (``indexing``, ``query``, ``dedup``, ``evaluation``, ``info``,
``doctor``, ``bench``, ``demo``, ``whitening``); each offers ``add_parser(subparsers, parent)`` and a
``run(args)`` that returns the exit code. Shared pieces: ``image_index`` (an index file
with its model record and file metadata), ``files`` (finding images, file state),
``progress``, ``output`` (table / JSON / CSV), ``contact_sheet``, ``errors``.

Exit codes
    0 success; 1 partial success (some files were skipped, see the errors report);
    2 usage error (bad arguments); 3 failure; 130 interrupted (Ctrl-C).

Errors print as one line, ``fastretrieve: error: ...``; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings

from .. import __version__
from . import bench, dedup, demo, doctor, evaluation, indexing, info, query, serve, whitening
from .errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, CommandError, UsageError

__all__ = ["main", "build_parser"]

COMMANDS = (indexing, query, dedup, info, evaluation, whitening, demo, doctor, bench, serve)

DESCRIPTION = """\
Content-based image retrieval and exact vector search.

examples:
  fastretrieve demo                                  # try it on the bundled photos
  fastretrieve index ~/Photos -o photos.fri --recursive
  fastretrieve search photos.fri query.jpg -k 10 --grid results.png
  fastretrieve dedup photos.fri
  fastretrieve evaluate labelled_photos/ -k 10
  fastretrieve fit-whitening photos.fri              # learn from your photos, if it helps

exit codes: 0 success, 1 some files skipped, 2 usage error, 3 failure, 130 interrupted.
Run `fastretrieve COMMAND --help` for each command's options and examples.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="fastretrieve", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fastretrieve {__version__}")
    # Options every command takes, accepted after the command name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    common.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bar and no informational messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add_command(name, *, help, description, epilog):
        """A command's parser, with the options and help layout that every command shares."""
        return subparsers.add_parser(
            name, parents=[common], help=help, description=description, epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    for command in COMMANDS:
        command.add_parser(add_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with 2 on a usage error, printing why
    warnings.showwarning = _one_line_warning
    try:
        return args.run(args)
    except UsageError as error:
        print(f"fastretrieve {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fastretrieve: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `fastretrieve search ... | head`: the reader left
        sys.stderr.close()
        return EXIT_FAILURE
    except Exception as error:  # every failure becomes one readable line
        if args.debug:
            traceback.print_exc()
        hint = ""
        if not args.debug and not isinstance(error, (CommandError, OSError, ValueError)):
            hint = " (unexpected: --debug shows the traceback)"
        print(f"fastretrieve: error: {_describe(error)}{hint}", file=sys.stderr)
        return EXIT_FAILURE


def _describe(error: BaseException) -> str:
    if isinstance(error, (CommandError, ValueError, RuntimeError)):
        return str(error)
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    return f"{type(error).__name__}: {error}"


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"fastretrieve: warning: {message}", file=sys.stderr)
