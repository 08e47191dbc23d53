"""What follows on the running agent (agent/app.py) from a new config: schedule, alarms, thresholds.

Loaded for a config command once the config is applied (agent/commands.py; the checks, defaults and
merge of agent/config.py have come and gone by then, so they are never in the heap together with this)
and dropped after it (agent/transient.py); start-up uses slow_period() too.
"""


def follow(agent):
    """Bring the agent's schedule, alarms and sensor thresholds in line with its config in force."""
    slow_period(agent.config, agent.reporter, agent.sensor, agent.scheduler)
    agent.reporter.reload()
    agent.sensor.set_thresholds(agent.reporter.near_thresholds())
    agent.config._doc = None  # read: the effective document is rebuilt only when asked for again
    task = agent._sleeper  # a new period counts from now, not after the quiet-day sleep under way
    if task is not None:
        agent._sleeper = None
        task.cancel()


def slow_period(config, reporter, sensor, scheduler):
    """Set the scheduler's quiet-day period from the config in force."""
    # The config's period (key 4) for the kind's main measurement, but never longer than the sensor's
    # own: the wind sensor's 3-second gust needs samples every few seconds.
    seconds = config.sample_s(reporter.measures[0])
    if seconds:
        scheduler.slow_ms = min(int(seconds * 1000), sensor.interval_ms(False))
