"""`python -m rebuild.cli`: the same command as the `rebuild` entry point."""

from rebuild.cli.main import main

main()
