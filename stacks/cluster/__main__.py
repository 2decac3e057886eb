"""Thin entry point for plain `pulumi up` in this folder (README): the program is
rebuild.programs.cluster, shipped in the rebuild package and run by rebuild from there."""

from rebuild.programs.cluster import main

main()
