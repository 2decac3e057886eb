"""Sources rebuild compiles into its toolchain (see rebuild/adapters/toolchain.py)."""
