"""What goes on a board: board definitions, boot files and the bundle build (CPython side)."""
