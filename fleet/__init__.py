"""cityfleet's fleet manager: build, flash, provision, watch and update sensor nodes."""

__version__ = "0.1.0"
