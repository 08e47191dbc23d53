"""Outbox on flash: drain order, ack persistence, drop-oldest counting, torn-tail recovery at every byte.
The case_* functions run under CPython and under the MicroPython VM; hypothesis properties under CPython.
"""

try:
    import pytest
except ImportError:  # under the MicroPython VM only the case_* functions and run_cases() are used
    pytest = None

import os

from agent.errors import AgentError
from agent.outbox import OVERHEAD, Outbox


def _payload(seq):
    return bytes([(seq * 7 + i) & 0xFF for i in range(seq % 23 + 1)])


def _drain(box, batch=64):
    """All records left, oldest first, as (type, seq, bytes); acks them."""
    out = []
    while True:
        recs = box.peek(batch)
        if not recs:
            return out
        out.extend((t, s, bytes(p)) for t, s, p in recs)
        assert box.ack(len(recs)) == len(recs)


def _fill(box, first, count):
    for seq in range(first, first + count):
        box.append(seq % 3, seq, _payload(seq))


def case_drains_oldest_first_in_batches_bounded_by_the_buffer(tmp):
    box = Outbox(tmp, seg_bytes=256, max_segments=8, buf_bytes=64)
    _fill(box, 0, 40)
    assert box.count == 40
    recs = box.peek(64)
    assert 0 < len(recs) < 40 and sum(len(p) for _, _, p in recs) <= 64
    assert [s for _, s, _ in recs] == list(range(len(recs)))
    assert box.peek(2)[1][1] == 1  # peek without ack starts over
    got = _drain(box, 5)
    assert got == [(s % 3, s, _payload(s)) for s in range(40)]
    assert box.count == 0 and box.peek(5) == [] and box.ack(5) == 0


def case_ack_position_survives_a_reboot_with_bounded_resends(tmp):
    box = Outbox(tmp, seg_bytes=256, max_segments=8, ack_every=8)
    _fill(box, 0, 60)
    for _ in range(9):  # ack 27 records, three at a time
        box.ack(len(box.peek(3)))
    box = Outbox(tmp, seg_bytes=256, max_segments=8, ack_every=8)  # power cut: no sync()
    first = box.peek(1)[0][1]
    assert 27 - 8 < first <= 27, first  # at most ack_every - 1 resent, none lost
    assert [s for _, s, _ in _drain(box)] == list(range(first, 60))
    box.sync()
    box = Outbox(tmp, seg_bytes=256, max_segments=8, ack_every=8)
    assert box.count == 0 and box.peek(1) == []
    _fill(box, 60, 3)  # appends continue after a full drain
    assert [s for _, s, _ in _drain(Outbox(tmp, seg_bytes=256, max_segments=8))] == [60, 61, 62]


def case_full_budget_drops_oldest_segment_and_counts(tmp):
    box = Outbox(tmp, seg_bytes=128, max_segments=3)
    _fill(box, 0, 100)
    assert box.dropped > 0 and box.dropped + box.count == 100
    seqs = [s for _, s, _ in Outbox(tmp, seg_bytes=128, max_segments=3).peek(64)]
    assert seqs[0] == box.dropped and seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert Outbox(tmp, seg_bytes=128, max_segments=3).dropped == box.dropped  # persisted
    segs = [n for n in os.listdir(tmp) if n.endswith(".seg")]
    assert len(segs) <= 3
    for n in segs:
        assert os.stat(tmp + "/" + n)[6] <= 128


def case_peeked_records_dropped_before_their_ack_are_not_acked(tmp):
    box = Outbox(tmp, seg_bytes=128, max_segments=2)
    _fill(box, 0, 5)
    recs = box.peek(3)
    _fill(box, 5, 40)  # drops the segment holding the peeked records
    assert box.ack(len(recs)) == 0
    assert box.dropped + box.count == 45


def _copy_truncated(src, dst, size):
    with open(src, "rb") as f:
        data = f.read(size)
    with open(dst, "wb") as f:
        f.write(data)


def case_torn_tail_at_every_byte_keeps_every_earlier_record(tmp):
    os.mkdir(tmp)
    base = tmp + "/base"
    box = Outbox(base, seg_bytes=4096, max_segments=4)
    _fill(box, 0, 9)
    seg = [n for n in os.listdir(base) if n.endswith(".seg")][0]
    size = os.stat(base + "/" + seg)[6]
    last = OVERHEAD + len(_payload(8))
    for cut in range(size - last, size):
        work = tmp + "/cut" + str(cut)
        os.mkdir(work)
        _copy_truncated(base + "/" + seg, work + "/" + seg, cut)
        box = Outbox(work, seg_bytes=4096, max_segments=4)
        assert box.count == 8
        box.append(1, 100, b"after")  # goes to a fresh segment: nothing valid follows garbage
        got = _drain(Outbox(work, seg_bytes=4096, max_segments=4))
        assert got == [(s % 3, s, _payload(s)) for s in range(8)] + [(1, 100, b"after")], cut


def case_corrupt_tail_bytes_are_skipped(tmp):
    box = Outbox(tmp, seg_bytes=4096, max_segments=4)
    _fill(box, 0, 5)
    seg = tmp + "/" + [n for n in os.listdir(tmp) if n.endswith(".seg")][0]
    with open(seg, "r+b") as f:
        f.seek(os.stat(seg)[6] - 3)
        f.write(b"\xff")
    with open(seg, "ab") as f:
        f.write(b"\x05\x00garbage")
    got = _drain(Outbox(tmp, seg_bytes=4096, max_segments=4))
    assert [s for _, s, _ in got] == [0, 1, 2, 3]


def case_refuses_what_cannot_fit(tmp):
    box = Outbox(tmp, seg_bytes=64, max_segments=2, buf_bytes=1024)
    assert box.max_payload == 64 - OVERHEAD
    try:
        box.append(0, 1, bytes(box.max_payload + 1))
    except AgentError:
        pass
    else:
        raise AssertionError("oversized record accepted")
    box.append(0, 1, bytes(box.max_payload))
    assert box.count == 1


def run_cases(tmp):
    """Run every case_* function (the MicroPython VM calls this) in subdirectories of `tmp`."""
    names = [name for name in sorted(globals()) if name.startswith("case_")]
    for name in names:
        os.mkdir(tmp + "/" + name)
        globals()[name](tmp + "/" + name + "/box")
    print("ok", len(names))


if pytest is not None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from tests.mpvm import check_micropython

    CASES = [name for name in sorted(globals()) if name.startswith("case_")]

    @pytest.mark.parametrize("name", CASES)
    def test_case_under_cpython(name, tmp_path):
        globals()[name](str(tmp_path / "box"))

    @pytest.mark.micropython
    def test_cases_under_micropython(tmp_path):
        out = check_micropython(f"import tests.test_agent_outbox as t\nt.run_cases({str(tmp_path)!r})",
                                heap="110k", timeout=120)
        assert f"ok {len(CASES)}" in out

    @pytest.mark.micropython
    def test_ram_use_under_micropython(tmp_path):
        code = (
            "import gc\ngc.collect()\nfree0 = gc.mem_free()\nfrom agent.outbox import Outbox\n"
            "gc.collect()\nfree1 = gc.mem_free()\n"
            "box = Outbox(ROOT, seg_bytes=4096, max_segments=16, buf_bytes=2048)\n"
            "gc.collect()\nfree2 = gc.mem_free()\n"
            "for i in range(600):\n    box.append(0, i, bytes(40))\n"
            "for i in range(20):\n    box.ack(len(box.peek(64)))\n"
            "gc.collect()\nfree3 = gc.mem_free()\n"
            "print('import', free0 - free1, 'open', free1 - free2, 'after', free1 - free3)\n"
        ).replace("ROOT", repr(str(tmp_path / "box")))
        out = check_micropython(code, heap="110k").split()
        imported, opened, after = int(out[1]), int(out[3]), int(out[5])
        print(f"outbox heap: import {imported} B, open {opened} B, after 600 appends and 20 drains {after} B")
        assert opened < 4096 and after < imported + 4096  # the buffer plus bookkeeping, not the data

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from(["append", "drain", "reopen"]), st.integers(1, 12)),
                    max_size=40))
    def test_no_loss_no_reorder_except_counted_drops(tmp_path_factory, ops):
        root = str(tmp_path_factory.mktemp("box"))
        make = lambda: Outbox(root, seg_bytes=160, max_segments=3, buf_bytes=96, ack_every=4)  # noqa: E731
        box, seq, got = make(), 0, []
        for op, n in ops:
            if op == "append":
                _fill(box, seq, n)
                seq += n
            elif op == "drain":
                recs = box.peek(n)
                got.extend(s for _, s, _ in recs)
                box.ack(len(recs))
            else:
                box = make()
        got.extend(s for _, s, _ in _drain(box))
        unique = sorted(set(got))
        assert got == sorted(got) or len(unique) < len(got)  # resends only after a reopen
        assert unique == sorted(unique)
        # every number not received was counted as dropped
        assert seq - len(unique) <= box.dropped
