"""The one exception of the `protocols` package.

Every rejection of wire data or of a value that would go on the wire raises `ProtocolError`; its `reason`
is a short stable code (``"bad_topic"``, ``"missing_field"``, ...) that callers may count or report, its
text says what is wrong. It is a `ValueError`, so the CBOR codec's own errors and ours are caught alike.
"""


class ProtocolError(ValueError):
    """Wire data (or a value meant for the wire) that breaks the contract in SPEC.md."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        # MicroPython's ValueError has no __init__ attribute to call directly; super() works on both.
        super().__init__(reason + ": " + detail if detail else reason)
