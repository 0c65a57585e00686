"""`python -m cli`: the same command line as the `ses-relay` entry point (serve starts its worker so)."""

from cli import main

main(prog_name="ses-relay")
