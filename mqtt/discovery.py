"""Home Assistant MQTT discovery (opt-in): retained configs that point Home Assistant at a
device's or an edge's stats and at a device's objects per label, so they appear without hand
configuration."""

from __future__ import annotations

import json
import re

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


def announce(client, kind: str, name: str, topics, stats_interval_s: float, prefix: str = PREFIX,
             labels: list[str] = (), snapshot: bool = False) -> None:
    """Publish (retained) the discovery configs of a device's or an edge's sensors."""
    for topic, payload in discovery_messages(kind, name, topics, stats_interval_s, prefix, labels, snapshot):
        client.publish(topic, payload, qos=1, retain=True)


def discovery_messages(kind: str, name: str, topics, stats_interval_s: float, prefix: str = PREFIX,
                       labels: list[str] = (), snapshot: bool = False) -> list[tuple[str, bytes]]:
    """(topic, payload) per entity; publish them retained. Every entity is available while the
    client's status topic says ``online``. A device also gets, per label of its detector, an
    object count and an "object present" binary sensor (Frigate's shape), read from its retained
    objects topic, and with ``snapshot`` a camera showing its latest annotated frame."""
    stats, status = ((topics.device_stats(name), topics.device_status(name)) if kind == "device"
                     else (topics.edge_stats(name), topics.edge_status(name)))
    node = f"ans_{name}"
    common = {"availability_topic": status, "payload_available": "online", "payload_not_available": "offline",
              "device": {"identifiers": [node], "name": f"ANS {kind} {name}", "manufacturer": "ANS", "model": kind}}
    messages = []
    for key, label, unit in SENSORS[kind]:
        config = {"name": label, "unique_id": f"{node}_{key}", "state_topic": stats,
                  "value_template": f"{{{{ value_json.{key} }}}}", "expire_after": int(3 * stats_interval_s) + 1,
                  **common}
        if unit:
            config["unit_of_measurement"] = unit
            config["state_class"] = "measurement"
        messages.append((f"{prefix}/sensor/{node}/{key}/config", json.dumps(config).encode()))
    for label in labels if kind == "device" else ():
        key, field = _object_id(label), f"value_json[{json.dumps(label)}]"
        count = {"name": f"{label} count", "unique_id": f"{node}_{key}_count", "state_topic": topics.objects(name),
                 "value_template": f"{{{{ {field} }}}}", "state_class": "measurement", **common}
        present = {"name": f"{label} present", "unique_id": f"{node}_{key}_present",
                   "state_topic": topics.objects(name), "value_template": f"{{{{ 'ON' if {field} > 0 else 'OFF' }}}}",
                   "payload_on": "ON", "payload_off": "OFF", "device_class": "occupancy", **common}
        messages.append((f"{prefix}/sensor/{node}/{key}_count/config", json.dumps(count).encode()))
        messages.append((f"{prefix}/binary_sensor/{node}/{key}_present/config", json.dumps(present).encode()))
    if snapshot and kind == "device":
        camera = {"name": "Snapshot", "unique_id": f"{node}_snapshot", "topic": topics.snapshot(name), **common}
        messages.append((f"{prefix}/camera/{node}/snapshot/config", json.dumps(camera).encode()))
    return messages


def _object_id(label: str) -> str:
    """A label as a discovery object id: letters, digits, '_' and '-' only."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", label) or "_"
