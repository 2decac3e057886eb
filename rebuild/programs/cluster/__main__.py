"""The entry Pulumi runs (the folder is the program); the code is in rebuild.programs.cluster."""

from rebuild.programs.cluster import main

main()
