"""Code the node needs now and then (a command, a config, start-up), loaded for the call and then dropped.

A `.mpy` module costs heap for as long as it stays imported, and the 110 KB heap cannot keep everything
resident (issue 4). `call(fn, *args)` runs `fn` and afterwards forgets every module imported during the
call (from sys.modules and its package), so the collector frees their code. Only modules nothing kept a
reference to are dropped: a result must be plain data, not an instance of a class defined there, unless
that class has no methods (a methodless class does not keep its module's functions alive). The names they
interned (qstrs) stay: MicroPython never frees those, which is why they are counted once and small.
"""

import gc
import sys

_room: list = [None]  # a block held for the loads of a call: a busy heap fragments into holes too small for code


def hold(size):
    """Keep `size` bytes in one block, given back for the duration of each call (taken at start-up, while
    the heap is contiguous). A node sampling fast leaves its free heap in small holes, and loading a module
    needs blocks of a few hundred bytes."""
    _room[0] = bytearray(size)


def call(fn, *args):
    """fn(*args), then drop the modules it imported."""
    room = _room[0]
    size = 0 if room is None else len(room)
    _room[0] = room = None
    before = list(sys.modules)
    if size:
        gc.collect()
    try:
        return fn(*args)
    finally:
        drop(before)
        if size:
            gc.collect()
            try:
                _room[0] = bytearray(size)
            except MemoryError:
                pass  # the next call goes without it


def drop(before):
    """Forget every module imported since `before` (a list of sys.modules keys)."""
    for name in [name for name in sys.modules if name not in before]:
        module = sys.modules.pop(name)
        package, _, leaf = name.rpartition(".")
        parent = sys.modules.get(package)
        if parent is not None and getattr(parent, leaf, None) is module:
            delattr(parent, leaf)
