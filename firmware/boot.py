# boot.py: runs at every start before main.py. Kept tiny: an app update never replaces it.
import gc

# Collect after every 4 KB allocated rather than only when the heap is full: the garbage of loading the
# agent's modules is then reclaimed before long-lived objects are placed around it, which keeps the
# 110 KB heap of an ESP32 without PSRAM from fragmenting (the agent fits it with little to spare).
gc.collect()
gc.threshold(4096)

# A release installed over the air runs on trial (agent/ota_install.py writes /app/trial, "new previous
# tries cid version", then switches /app/active): each boot counts; past _TRIES boots, or once main.py
# marked it expired (not confirmed in time), /app/active goes back to the previous slot and
# /app/rollback ("reason cid version") tells its agent what to report. Every file is replaced by
# rename, so a power cut at any point leaves the old state or the new one; run again, this finishes.
# A confirmed slot's watchdog resets count as crashes (main.py counts the others; safe mode past a
# limit); a power-on starts the count again.
_APP = "/app"
_TRIES = 3


def _boot():
    import os

    def words(name):
        try:
            with open(_APP + "/" + name) as f:
                return f.read().split()
        except OSError:
            return None

    def put(name, text):
        with open(_APP + "/" + name + ".new", "w") as f:
            f.write(text)
        os.rename(_APP + "/" + name + ".new", _APP + "/" + name)

    trial = words("trial")
    if trial is None:
        import machine

        cause = machine.reset_cause()
        if cause == machine.PWRON_RESET:
            if words("crashes") is not None:
                os.remove(_APP + "/crashes")
        elif cause == machine.WDT_RESET:
            crashes = words("crashes")
            put("crashes", str(int(crashes[0]) + 1 if crashes and crashes[0].isdigit() else 1))
        return
    if len(trial) < 5 or trial[0] != (words("active") or [""])[0]:
        os.remove(_APP + "/trial")  # the switch never happened (cut before it): not on trial
        return
    if trial[2].isdigit() and int(trial[2]) < _TRIES:
        trial[2] = str(int(trial[2]) + 1)
        put("trial", " ".join(trial))
        return
    reason = "CRASHED" if trial[2].isdigit() else "TRIAL_FAILED"
    put("rollback", "%s %s %s" % (reason, trial[3], " ".join(trial[4:])))
    put("active", trial[1])
    os.remove(_APP + "/trial")


try:
    _boot()
except Exception as error:  # never keep main.py from starting an agent
    print("boot:", error)
del _boot
