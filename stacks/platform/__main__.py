"""Thin entry point for plain `pulumi up` in this folder (README): the program is
rebuild.programs.platform, shipped in the rebuild package and run by rebuild from there."""

from rebuild.programs.platform import main

main()
