"""Home Assistant MQTT discovery (opt-in): one retained config per client that points Home
Assistant at a device's or an edge's stats and at a device's objects per label, so they appear
without hand configuration."""

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


def config_topic(name: str, prefix: str = PREFIX) -> str:
    """The one discovery topic of a device or an edge (Home Assistant's device discovery, 2024.11 and
    later): one retained message per client, so the broker's ACL can name it exactly."""
    return f"{prefix}/device/ans_{name}/config"


def announce(client, kind: str, name: str, topics, stats_interval_s: float, prefix: str = PREFIX,
             labels: list[str] = (), snapshot: bool = False) -> None:
    """Publish (retained) the discovery config of a device's or an edge's entities."""
    topic, payload = discovery_message(kind, name, topics, stats_interval_s, prefix, labels, snapshot)
    client.publish(topic, payload, qos=1, retain=True)


def discovery_message(kind: str, name: str, topics, stats_interval_s: float, prefix: str = PREFIX,
                      labels: list[str] = (), snapshot: bool = False) -> tuple[str, bytes]:
    """(topic, payload): one device-discovery config naming every entity of this client and no other.
    Every entity is available while the client's status topic says ``online``. A device also gets,
    per label of its detector, an object count and an "object present" binary sensor (Frigate's
    shape), read from its retained objects topic, and with ``snapshot`` a camera showing its latest
    annotated frame."""
    stats, status = ((topics.device_stats(name), topics.device_status(name)) if kind == "device"
                     else (topics.edge_stats(name), topics.edge_status(name)))
    node = f"ans_{name}"
    components: dict[str, dict] = {}
    for key, label, unit in SENSORS[kind]:
        config = {"p": "sensor", "name": label, "unique_id": f"{node}_{key}", "state_topic": stats,
                  "value_template": f"{{{{ value_json.{key} }}}}", "expire_after": int(3 * stats_interval_s) + 1}
        if unit:
            config["unit_of_measurement"] = unit
            config["state_class"] = "measurement"
        components[config["unique_id"]] = config
    for label in labels if kind == "device" else ():
        key, field = _object_id(label), f"value_json[{json.dumps(label)}]"
        count = {"p": "sensor", "name": f"{label} count", "unique_id": f"{node}_{key}_count",
                 "state_topic": topics.objects(name), "value_template": f"{{{{ {field} }}}}",
                 "state_class": "measurement"}
        present = {"p": "binary_sensor", "name": f"{label} present", "unique_id": f"{node}_{key}_present",
                   "state_topic": topics.objects(name), "value_template": f"{{{{ 'ON' if {field} > 0 else 'OFF' }}}}",
                   "payload_on": "ON", "payload_off": "OFF", "device_class": "occupancy"}
        components[count["unique_id"]], components[present["unique_id"]] = count, present
    if snapshot and kind == "device":
        components[f"{node}_snapshot"] = {"p": "camera", "name": "Snapshot", "unique_id": f"{node}_snapshot",
                                          "topic": topics.snapshot(name)}
    config = {"dev": {"identifiers": [node], "name": f"ANS {kind} {name}", "manufacturer": "ANS", "model": kind},
              "o": {"name": "ANS"}, "availability_topic": status, "payload_available": "online",
              "payload_not_available": "offline", "cmps": components}
    return config_topic(name, prefix), json.dumps(config).encode()


def _object_id(label: str) -> str:
    """A label as a discovery object id: letters, digits, '_' and '-' only."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", label) or "_"
