"""The built-in Pulumi programs, shipped in the wheel: one folder per project (cluster, platform).

Each folder holds the project's ``Pulumi.yaml``, a two-line ``__main__.py`` entry and the
program's code; rebuild's Automation API driver (rebuild/adapters/pulumi/) runs them from
a private copy of the folder under the state dir, with the Python that runs rebuild. The
top-level stacks/<name>/ folders of a checkout are thin entry points to the same code, for
plain ``pulumi up`` (README).
"""
