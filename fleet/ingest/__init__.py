"""The ingest: every device message from the broker, decoded, checked against the fleet's own alarm
thresholds and written to the store in batches (`fleet ingest`).

- `fleet.ingest.decode`: one MQTT message -> `Inbound` (valid) or `Quarantined` (not), pure.
- `fleet.ingest.thresholds`: the fleet-side alarm check of each device's readings.
- `fleet.ingest.service`: the long-running MQTT client (gmqtt) and the batch writer.
"""
