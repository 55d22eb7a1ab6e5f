"""`python -m gradexp ...`: the same command line as `gradexp ...`."""

from .cli import entry

entry()
