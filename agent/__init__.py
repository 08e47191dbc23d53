"""cityfleet agent: the MicroPython program of a sensor node (see README.md and issue 4)."""
