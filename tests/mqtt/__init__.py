"""The MQTT transport and the broker, on a real Mosquitto (and real PostgreSQL)."""
