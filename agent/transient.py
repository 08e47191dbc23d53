"""Code the node needs now and then (a command, a config, start-up), loaded for the call and then dropped.

A `.mpy` module costs heap for as long as it stays imported, and the 110 KB heap cannot keep everything
resident (issue 4). `call(fn, *args)` runs `fn` and afterwards forgets every module imported during the
call (from sys.modules and its package), so the collector frees their code. Only modules nothing kept a
reference to are dropped: a result must be plain data, not an instance of a class defined there, unless
that class has no methods (a methodless class does not keep its module's functions alive). The names they
interned (qstrs) stay: MicroPython never frees those, which is why they are counted once and small.
"""

import sys


def call(fn, *args):
    """fn(*args), then drop the modules it imported."""
    before = list(sys.modules)
    try:
        return fn(*args)
    finally:
        drop(before)


def drop(before):
    """Forget every module imported since `before` (a list of sys.modules keys)."""
    for name in [name for name in sys.modules if name not in before]:
        module = sys.modules.pop(name)
        package, _, leaf = name.rpartition(".")
        parent = sys.modules.get(package)
        if parent is not None and getattr(parent, leaf, None) is module:
            delattr(parent, leaf)
