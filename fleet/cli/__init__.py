"""The `fleet` command line: one module per command group, one top-level error handler."""
