"""vitals: ingest.broker, the Mosquitto side of MQTT ingestion.

`config` (URLs, `vitals broker init`: the config with dynamic security and the
two fixed accounts, the ingester's client id), `accounts` (provider accounts
over the dynamic-security control topic), `store` (the broker's persistence
file: removing retained messages).
"""
