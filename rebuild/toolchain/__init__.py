"""Sources rebuild compiles into its toolchain (see rebuild/toolchain/recipes.py)."""
