"""`python -m services.cli`: the command line, as `mention-router`."""

from services.cli import main

main()
