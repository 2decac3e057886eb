"""Adapters: the only modules that touch the outside world (processes, network, files of other tools)."""
