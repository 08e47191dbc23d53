"""fleet-sim: thousands of simulated sensor nodes on one machine, each speaking the real protocol.

    fleet broker config --port 1883                      # once: the fleet's broker files
    fleet-sim provision --count 10000 --kind mixed       # registry, credentials, passwd/acl, devices file
    mosquitto -c $FLEET_HOME/broker/mosquitto.conf &     # or fleet.broker.run_broker
    fleet ingest &
    fleet-sim run --duration 600 --scenario typhoon --speed 3 --rate 0.5 --outage-share 0.05 \\
                  --misbehave-share 0.01 --procs 2 --report sent.json

Modules, one job each: `mqttwire` (MQTT 3.1.1 packets), `connection` (one device's socket, an asyncio
Protocol), `scenario` (the emulator's scenarios as wire values), `device` (one node's behaviour),
`firmware` (the release a device runs), `ota` (the agent's side of an update: offers, restarts, trial,
rollback), `update` (update mode: pulls, checks, progress), `report` (what was sent, and the gaps a store
must show), `runner` (the scheduler, processes), `provision` (batch registration), `cli`.

OTA. Devices registered with `--board emulator` and run with `--bundle DIR` (the bundle they run: its
version, files and trust list) take `fleet ota rollout` offers as the agent does: a restart into update
mode (a new boot, a birth with the old version), the envelope checked (SHA-256, Ed25519 with
`cryptography`), only the files that differ pulled and inflated into a running SHA-256, a restart on
trial (a birth with the new version) and 4 done; `--ota-rollback-share`, `--ota-fail-share` and
`--ota-cut-share` make a share roll back (CRASHED), run out of flash (NO_SPACE) or lose their link
mid-download and resume. `make bench` (tools/bench_ota.py) runs campaigns over 1,000 of them.

Why not gmqtt per device. Measured here (Mosquitto 2.0.11 on loopback, 2 cores): 10,000 gmqtt clients
took 19.3 KB each and 4.2 s to connect; 10,000 connections of this module's Protocol 2.7 KB and 1.2 s.
A whole simulated device (connection, outbox, alarms, ledger) costs about 6.4 KB.

Measured figures (same machine, devices with auth, will, birth and subscription, sampling at 1 pack/s):
one process connects 10,000 devices in about 4 s and sustains about 10,000 messages/s (100 µs of CPU a
message, a third of it the device's own pure-Python CBOR encoder, `protocols.cbor`); with `--procs 2`,
19,400 messages/s from 10,000 devices, beside Mosquitto using about a third of a core.

Registry. `fleet.registry.TinyRegistry.add` rewrites and fsyncs the whole JSON file, so the n-th add
costs O(n): about 125 ms at 10,000 devices (a 5.3 MB file), about 10 minutes to add 10,000 one by one.
`fleet-sim provision` uses `add_many`, one locked write for the batch with the same checks: 10,000
devices in about 1.1 s, 0.4 s of it the registry. Reads reuse the last parsed file while its bytes are
unchanged, so a `get` at 10,000 costs 0.3 ms after the first (`make bench`, tools/bench_registry.py).
"""
