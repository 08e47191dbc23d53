# main.py: start the agent from the active app slot. Never updated over the air, so it stays tiny.
# The app lives in /app/a or /app/b; /app/active names the one to run (fleet flash and OTA switch it
# last, atomically). No slot: say so and stay at the REPL. An unprovisioned board stays at the REPL for
# the technician; any other failure is printed and the board resets after a pause, so a transient
# fault never leaves it dead.
import sys
import time

import board


def _slot():
    try:
        with open("/app/active") as f:
            slot = f.read().strip()
    except OSError:
        return None
    return slot if slot in ("a", "b") else None


def _start():
    from agent import app
    from agent.errors import AgentError

    try:
        app.main(board.Board())
    except AgentError as error:
        print("agent:", error)
        return
    except KeyboardInterrupt:
        print("agent: stopped")
        return
    except Exception as error:
        sys.print_exception(error)
        print("agent: crashed; resetting in 10 s (Ctrl-C to stay at the REPL)")
        time.sleep(10)
        board.Board().reset()


_app = _slot()
if _app is None:
    print("agent: no app installed; run fleet flash")
else:
    sys.path.insert(0, "/app/" + _app)  # first: the slot's agent and protocols, before anything else
    _start()
