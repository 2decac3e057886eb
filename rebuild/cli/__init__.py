"""The command line: parse, call one use case, render, choose the exit code.

app.py holds the click group (global options, output, errors, exit codes); one module per
command group adds its commands to it; main.py imports them all. It is imported here so that
importing any part of the CLI yields the complete command.
"""

from rebuild.cli import main as main
