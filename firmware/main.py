# main.py: start the agent. An unprovisioned board stays at the REPL for the technician; any other
# failure is printed and the board resets after a pause, so a transient fault never leaves it dead.
import sys
import time

import board


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


_start()
