"""The health report (SPEC.md "Health"): uptime, heap, flash, battery, link, outbox and error counters.

Sent every few minutes and on a rebirth, so this code is loaded for each report (agent/transient.py)
rather than kept in the heap.
"""

import gc
import time

from protocols import up_status


def encode(agent, seq):
    """The health report of `agent` at this moment, as message `seq`, encoded; free heap is measured after a collection."""
    gc.collect()
    board = agent.board
    uptime = time.ticks_diff(time.ticks_ms(), agent.started) // 1000
    battery = board.battery_v()
    rssi = board.link_quality()
    return up_status.health(agent.sequence.boot, seq, uptime, heap_free=gc.mem_free(),
                            heap_min=agent.heap_min, flash_free=min(board.flash_free(), 0xFFFFFFFF),
                            battery=None if battery is None else int(battery * 1000),
                            rssi=None if rssi is None else max(-127, min(0, rssi)),
                            outbox=agent.outbox.count, dropped=agent.outbox.dropped,
                            errors=_counters(agent), fault=agent.fault, reconnects=agent.link.connects)


def _counters(agent):
    # Network, broker and protocol failures are told apart (link.failures), beside sensor and task
    # errors; at most 8 entries, as the wire limits maps.
    counters = {}
    for state, count in agent.link.failures.items():
        if count:
            counters[state.lower()] = count
    for code, count in agent.errors.items():
        if len(counters) < 8:
            counters[code] = count
    return counters or None
