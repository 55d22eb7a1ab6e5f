"""`python -m gradexp ...`: the same command line as `gradexp ...`."""

from .cli import main

main(prog_name="gradexp")
