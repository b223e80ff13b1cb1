"""Home Assistant MQTT discovery (opt-in): retained sensor configs that point Home Assistant at a
device's or an edge's stats topic, so its main numbers appear without hand configuration."""

from __future__ import annotations

import json

PREFIX = "homeassistant"

#: (key in the stats JSON, name, unit) per kind of client.
SENSORS = {
    "device": (("fps", "Frames per second", "fps"), ("delay_mean_ms", "Mean delay", "ms"),
               ("delay_p95_ms", "p95 delay", "ms"), ("split", "Chosen split", None),
               ("fallbacks", "Fallbacks", None), ("exploration_rate", "Exploration rate", None)),
    "edge": (("requests_per_s", "Requests per second", "req/s"), ("queue_depth", "Queue depth", None),
             ("batch_mean", "Mean batch size", None), ("compute_mean_ms", "Mean tail compute", "ms"),
             ("errors", "Errors", None), ("cpu_percent", "CPU use", "%")),
}


def announce(client, kind: str, name: str, topics, stats_interval_s: float) -> None:
    """Publish (retained) the discovery configs of a device's or an edge's sensors."""
    stats, status = ((topics.device_stats(name), topics.device_status(name)) if kind == "device"
                     else (topics.edge_stats(name), topics.edge_status(name)))
    for topic, payload in discovery_messages(kind, name, stats, status, stats_interval_s):
        client.publish(topic, payload, qos=1, retain=True)


def discovery_messages(kind: str, name: str, stats_topic: str, status_topic: str,
                       stats_interval_s: float) -> list[tuple[str, bytes]]:
    """(topic, payload) per sensor; publish them retained."""
    node = f"ans_{name}"
    device = {"identifiers": [node], "name": f"ANS {kind} {name}", "manufacturer": "ANS", "model": kind}
    messages = []
    for key, label, unit in SENSORS[kind]:
        config = {
            "name": label,
            "unique_id": f"{node}_{key}",
            "state_topic": stats_topic,
            "value_template": f"{{{{ value_json.{key} }}}}",
            "availability_topic": status_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "expire_after": int(3 * stats_interval_s) + 1,
            "device": device,
        }
        if unit:
            config["unit_of_measurement"] = unit
            config["state_class"] = "measurement"
        messages.append((f"{PREFIX}/sensor/{node}/{key}/config", json.dumps(config).encode()))
    return messages
