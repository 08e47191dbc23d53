"""What follows on the running agent (agent/app.py) from the config in force: alarms, report filters,
schedule and sensor thresholds, and the effective document they are read from.

Run at start-up (agent/startup.py, agent/reporter.py) and after a config change (agent/commands.py; the
checks, defaults and merge of agent/config.py have come and gone by then, so they are never in the heap
together with this), loaded for the call and dropped after it (agent/transient.py): none of it runs
between config changes, so none of it stays in the heap.
"""

from agent import transient
from agent.alarm import Alarm
from agent.filters import Deadband, Heartbeat, RateLimit

_PLAIN_SCALE = 1.0


def effective(config):
    """The effective document of `config` (agent/config.py): the kind's defaults overlaid by the applied
    document; kept in config._doc until the caller lets it go."""
    if config._doc is None:
        # Calls of their own, as in agent/config.py: the defaults' code and the merge's never load together.
        base = transient.run("agent.defaults", "config_for", config.kind)
        config._doc = transient.run("agent.config_apply", "merge", base, config.applied)
    return config._doc


def alarm_from(name, entry):
    """Alarm built from a config entry {0 measure, 1 raise, 2 clear, 3 confirm s, 4 level, 5..7 optional}."""
    return Alarm(name, entry[0], entry[1], entry[2], entry.get(3, 0), entry.get(4, 2),
                 entry.get(6, 1), entry.get(5), entry.get(7))


def alarms(config):
    """New Alarm objects for the alarms in force: name -> Alarm."""
    return {name: alarm_from(name, entry) for name, entry in effective(config)[3].items()}


def sample_s(config, measure):
    """Slow (quiet-day) sample period of `measure`, seconds (None when the config has none)."""
    return effective(config)[4].get(measure)


def heartbeat(config):
    """Longest time between reports (SenML ut), seconds."""
    return effective(config)[5]


def deadband(config, measure):
    """Deadband of `measure` (0 when none)."""
    return effective(config)[6].get(measure, 0)


def reload(reporter):
    """(Re)build the reporter's alarms and filters from the config in force, keeping alarms that stay
    active (agent/reporter.py)."""
    config = reporter.config
    old = reporter.alarms
    reporter.alarms = alarms(config)
    for name, alarm in reporter.alarms.items():
        if name in old and old[name].active:
            alarm.restore(True)
    reporter._ut = heartbeat(config)
    reporter.cal = {}
    for name, cal in effective(config)[7].items():
        if cal[0] != 1 or cal[1] != 0:
            reporter.cal[name] = (cal[0], cal[1])
    reporter.channels = {}  # measurement -> (Deadband, RateLimit, Heartbeat)
    for name in reporter.measures:  # all now, while the config's document is at hand
        reporter.channels[name] = (Deadband(absolute=deadband(config, name)), RateLimit(reporter.min_gap_s),
                                   Heartbeat(reporter._ut))
    reporter.send_ut = True


def near_thresholds(reporter):
    """measure -> raise threshold of each of the reporter's alarms, for the sensor's `near()` (in sensor
    units: the alarms' are wire units, agent/reporter.py WIRE)."""
    from agent.reporter import WIRE

    out = {}
    for alarm in reporter.alarms.values():
        scale = WIRE.get(alarm.measure, (_PLAIN_SCALE,))[0]
        out[alarm.measure] = alarm.raise_at / scale
    return out


def follow(agent):
    """Bring the agent's schedule, alarms and sensor thresholds in line with its config in force."""
    slow_period(agent.config, agent.reporter, agent.sensor, agent.scheduler)
    reload(agent.reporter)
    agent.sensor.set_thresholds(near_thresholds(agent.reporter))
    agent.config._doc = None  # read: the effective document is rebuilt only when asked for again
    task = agent._sleeper  # a new period counts from now, not after the quiet-day sleep under way
    if task is not None:
        agent._sleeper = None
        task.cancel()


def slow_period(config, reporter, sensor, scheduler):
    """Set the scheduler's quiet-day period from the config in force."""
    # The config's period (key 4) for the kind's main measurement, but never longer than the sensor's
    # own: the wind sensor's 3-second gust needs samples every few seconds.
    seconds = sample_s(config, reporter.measures[0])
    if seconds:
        scheduler.slow_ms = min(int(seconds * 1000), sensor.interval_ms(False))
