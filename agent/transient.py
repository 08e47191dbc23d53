"""Code the node needs now and then (a command, a config, start-up), loaded for the call and then dropped.

A `.mpy` module costs heap for as long as it stays imported, and the 110 KB heap cannot keep everything
resident (issue 4). `call(fn, *args)` runs `fn` and afterwards forgets every module imported during the
call (from sys.modules and its package), so the collector frees their code. Only modules nothing kept a
reference to are dropped: a result must be plain data, not an instance of a class defined there, unless
that class has no methods (a methodless class does not keep its module's functions alive). The names they
interned (qstrs) stay: MicroPython never frees those, which is why they are counted once and small.

The room. Loading a module needs blocks of a few hundred bytes, and a node that samples fast leaves its
free heap in holes smaller than that. So `hold(n)` keeps n blocks of 1 KB, taken at start-up while the
heap is contiguous; the outermost call gives them back (after a collection) for its loads and takes them
again afterwards. Blocks of 1 KB rather than one large one: what a call keeps (its result, a record it
wrote) may sit where the room was, and the room must still come back, or the samples' garbage spreads
over it. A block that cannot be had is tried again after the next call.
"""

import gc
import sys

try:
    from micropython import const
except ImportError:  # CPython (tests, tools): const() is the value itself
    const = int  # type: ignore[assignment, no-redef]

_BLOCK = const(1024)
_room: list = [0] + [None] * 8  # [0]: blocks to hold; then the blocks (slots made once: no list growth)
_depth = [0]  # calls under way: only the outermost gives the room back and takes it again


def hold(blocks):
    """Keep `blocks` (at most 8) blocks of 1 KB for the loads of each call, from now on."""
    _room[0] = blocks
    call(int)  # a call of nothing: its end takes the room


def spare():
    """Give the room held for loads back to the rest of the agent (a task ran out of heap): the room is
    only worth keeping while nothing else needs it. The end of the next call takes it again if it can."""
    for i in range(1, 9):
        _room[i] = None


def call(fn, *args):
    """fn(*args), then drop the modules it imported."""
    outer = not _depth[0] and _room[0]
    if outer:
        for i in range(1, 9):
            _room[i] = None
        gc.collect()
    _depth[0] += 1
    before = list(sys.modules)
    try:
        return fn(*args)
    finally:
        _depth[0] -= 1
        if drop(before) or outer:
            # Collected here, above fn's frames: the C stack they leave behind is no longer scanned, so
            # a stale pointer in it cannot keep the dropped code alive (the collector is conservative).
            gc.collect()
        if outer:
            try:
                for i in range(1, _room[0] + 1):
                    _room[i] = bytearray(_BLOCK)
            except MemoryError:
                pass  # the rest after the next call


def run(module, how, *args):
    """`how`(*args) of the module named `module` (e.g. "protocols.up_status"), loaded for the call."""
    return call(_run, module, how, args)


def _run(module, how, args):
    return getattr(__import__(module, None, None, (how,)), how)(*args)


def drop(before):
    """Forget every module imported since `before` (a list of sys.modules keys); True when there were."""
    names = [name for name in sys.modules if name not in before]
    for name in names:
        module = sys.modules.pop(name)
        package, _, leaf = name.rpartition(".")
        parent = sys.modules.get(package)
        if parent is not None and getattr(parent, leaf, None) is module:
            delattr(parent, leaf)
    return bool(names)
