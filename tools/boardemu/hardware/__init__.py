"""Emulated board hardware for boardemu: chip models at the bus and register level, the physical world
that drives them, scenarios, and the hub and network gateway the VM's `machine`/`network` reach."""

from tools.boardemu.hardware.hardware import KINDS, Hardware

__all__ = ["KINDS", "Hardware"]
