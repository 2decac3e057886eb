"""Old import paths that stack state files name; the programs are in rebuild.programs."""
