"""agent/transient.py: the room held for per-call loads, given back when a running task runs out of heap."""

from __future__ import annotations

from tests.mpvm import check_micropython

ROOM = """
import gc
from agent import transient
transient.hold(6)
gc.collect()
held = gc.mem_free()
transient.spare()      # a task ran out of heap: the room goes to the running tasks
gc.collect()
spared = gc.mem_free()
transient.call(int)    # the end of the next call takes it again
gc.collect()
print(spared - held, gc.mem_free() - held)
"""


def test_the_room_is_given_back_to_the_tasks_and_taken_again_after_the_next_call():
    spared, again = map(int, check_micropython(ROOM, heap="64k").split())
    # most of the six 1 KB blocks free for the tasks (the collector is conservative: a stale pointer on
    # the C stack may keep one alive until later)
    assert spared >= 4 * 1024
    assert spared - again >= 5 * 1024  # held again: what a call loads finds its room
