# Imported by the emulator's boot (_emuboot) before the flash is mounted at "/": it loads every VM-side
# hardware module while tools/boardemu/vm is still reachable, so they stay importable afterwards.
import _emubus  # noqa: F401
import _emulink  # noqa: F401
import machine  # noqa: F401
import network  # noqa: F401
