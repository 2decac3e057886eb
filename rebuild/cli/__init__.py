"""The command line: parse, call one use case, render, choose the exit code."""
