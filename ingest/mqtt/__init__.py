"""vitals: ingest.mqtt, the MQTT ingester (`vitals mqtt`).

`topics` (subscription, provider of a topic, rejections topic), `client` (the
paho client: paused reading, graceful close), `acks` (deliveries, generations,
held bytes, PUBACKs and refusals), `pipeline` (parse through the gate, batch,
commit), `ingester` (thin paho callbacks, start and draining stop),
`instance` (stable instance ids), `process` (the `vitals mqtt` entry).
"""
