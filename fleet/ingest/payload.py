"""A device payload -> its validated message, as `protocols.messages.decode_up` reads it, only faster.

The contract's decoder (`protocols.cbor_decode`, pure Python so that it also runs on the node) costs the
ingest tens of microseconds a message, and `protocols.messages.load` then walks the value once more for its
depth. Here cbor2's compiled decoder reads the payload, and its value is used only when it is provably the
one the reference decoder would give; in every other case the payload goes through the reference, so a
rejected payload gets exactly the reference's reason and text (quarantine rows do not change). The proof:

- cbor2 raises on every tag (a decoder for every tag number that refuses it), so no tag turns into some
  other Python type (bignum -> int, date, ...) where the reference keeps a `Tag`;
- cbor2 raises on a duplicate map key (else it keeps the last, where the reference refuses) and on an
  indefinite length (the reference accepts them, with its own rules for string chunks: not worth proving);
- the item ends where the payload does (cbor2 ignores trailing bytes, the reference refuses them);
- one walk over the containers (`_plain`): map keys are int or text (not bool), every other item is
  None/bool/int/float/text/bytes (no `undefined`, no simple values) and no container sits deeper than
  MAX_DEPTH. cbor2's own `max_depth` bounds its recursion on hostile input but is no proof: it lets an
  empty container through one level too deep, which the reference calls `too_deep`.

Such a payload is well-formed CBOR inside the reference decoder's subset, so the reference would decode
it without error to an equal value of the same types; a longer head or a wider float than needed decodes
to the same value in both (SPEC.md asks senders for the shortest form, receivers have never refused a
longer one). tests/test_ingest_decode.py checks this on every vector, on every half float and on
generated values and garbage. What misses the fast path is only slower, never read differently.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from io import BytesIO
from typing import Any

import cbor2

from protocols import messages
from protocols.limits import MAX_DEPTH, check_size
from protocols.read_up import READERS

_LEAVES = frozenset((int, float, str, bytes, bool, type(None)))
_KEYS = frozenset((int, str))


def _refuse(*_args: Any) -> Any:
    raise ValueError("tags are left to the reference decoder")


class _EveryTag(Mapping[int, Any]):
    """cbor2's semantic_decoders: a decoder for every tag number, and each refuses (see the docstring)."""

    def __getitem__(self, tag: int) -> Any:
        return _refuse

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0


_NO_TAGS = _EveryTag()


def decode_up(kind: str, data: bytes) -> Any:
    """The message of topic type `kind` in `data`: same result, same ProtocolError as the reference."""
    reader = READERS.get(kind)
    if reader is None:
        return messages.decode_up(kind, data)  # raises the reference's bad_type
    return reader(load(data))


def load(data: bytes) -> Any:
    """`protocols.messages.load(data)`: the decoded value within the limits, or its ProtocolError."""
    check_size(data)
    value = fast_value(data)
    if value is NOT_PROVEN:
        return messages.load(data)
    return value


#: What `fast_value` returns for a payload it leaves to the reference decoder.
NOT_PROVEN = object()


def fast_value(data: bytes) -> Any:
    """The value of `data` when cbor2's reading is provably the reference decoder's, else NOT_PROVEN."""
    stream = BytesIO(data)
    try:
        value = cbor2.load(stream, max_depth=MAX_DEPTH, allow_indefinite=False, allow_duplicate_keys=False,
                           semantic_decoders=_NO_TAGS, tag_hook=_refuse)
    except Exception:  # noqa: BLE001 - anything cbor2 refuses is for the reference to name
        return NOT_PROVEN
    if stream.tell() != len(data):  # cbor2 leaves the stream after the item it read
        return NOT_PROVEN
    kind = type(value)
    if kind is list or kind is dict:
        return value if _plain(value, MAX_DEPTH - 1) else NOT_PROVEN
    return value if kind in _LEAVES else NOT_PROVEN


def _plain(container: Any, room: int) -> bool:
    """True if `container` holds only plain items, int/text keys and at most `room` levels of containers."""
    if type(container) is dict:
        if not _KEYS.issuperset(map(type, container)):
            return False
        container = container.values()
    if _LEAVES.issuperset(map(type, container)):
        return True  # the common case, checked in C: no nested container
    for item in container:
        kind = type(item)
        if kind is list or kind is dict:
            if room == 0 or not _plain(item, room - 1):
                return False
        elif kind not in _LEAVES:
            return False
    return True
