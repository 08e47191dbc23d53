"""Where SensorFault used to live; it is in agent/errors.py now.

Only agent/app.py still imports it from here. Once it imports `from agent.errors import SensorFault`,
delete this module: it costs a module's worth of heap for one name.
"""

from agent.errors import SensorFault  # noqa: F401 - re-exported for agent/app.py
