"""``python -m fastretrieve``: the command line (see :mod:`fastretrieve.cli`)."""

from .cli import main

raise SystemExit(main())
