"""The fleet manager's one exception base and its exit codes.

Every error a user can cause or fix is a `FleetError`; the CLI prints it as one line,
`fleet: <message>`, and exits with the error's code. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

#: Exit codes, documented in `fleet --help`.
EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran but what it checked failed (a FAIL in a checklist, a critical device)
EXIT_USAGE = 2  # wrong flags or arguments (click's own code)
EXIT_ERROR = 3  # the command could not do its job: bad input, unreachable board or broker, bad state
EXIT_INTERRUPTED = 130


class FleetError(Exception):
    """An error the user can act on: the message says what is wrong and what to do."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
