"""The wire contract between sensor nodes and the fleet manager (see SPEC.md); runs on MicroPython too."""
