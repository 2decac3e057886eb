"""The entry Pulumi runs (the folder is the program); the code is in rebuild.programs.platform."""

from rebuild.programs.platform import main

main()
