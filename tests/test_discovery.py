"""Home Assistant MQTT discovery payloads, checked against what Home Assistant's discovery
schema requires: the topic shape, the keys each component needs, unique ids, the device block,
availability; a device announces per label an object count and an "object present" sensor."""

import json
import re

import pytest

from mqtt.discovery import discovery_messages
from mqtt.protocol import Topics

TOPIC = re.compile(r"^(?P<prefix>[^/#+]+)/(?P<component>sensor|binary_sensor|camera)/(?P<node>[A-Za-z0-9_-]+)/"
                   r"(?P<object>[A-Za-z0-9_-]+)/config$")
#: Keys Home Assistant requires or reads, per component (MQTT sensor and binary sensor schemas).
REQUIRED = {"sensor": {"state_topic"}, "binary_sensor": {"state_topic"}, "camera": {"topic"}}
ALLOWED = {"name", "unique_id", "state_topic", "value_template", "availability_topic", "payload_available",
           "payload_not_available", "expire_after", "device", "unit_of_measurement", "state_class", "payload_on",
           "payload_off", "device_class", "topic"}
DEVICE_CLASSES = {"binary_sensor": {"occupancy", "motion", "presence", None}}


@pytest.mark.parametrize("kind, labels", [("device", ["person", "car", "traffic light"]), ("edge", [])])
def test_discovery_payloads_follow_the_home_assistant_schema(kind, labels):
    messages = discovery_messages(kind, "cam-1", Topics("ans"), 10.0, "ha-test", labels, snapshot=True)
    unique = set()
    components = []
    for topic, payload in messages:
        match = TOPIC.match(topic)
        assert match and match["prefix"] == "ha-test" and match["node"] == "ans_cam-1", topic
        config = json.loads(payload)
        component = match["component"]
        components.append(component)
        assert REQUIRED[component] <= set(config) <= ALLOWED, (topic, set(config) - ALLOWED)
        assert config["unique_id"] not in unique
        unique.add(config["unique_id"])
        assert config["device"]["identifiers"] == ["ans_cam-1"] and config["name"]
        assert config["availability_topic"] == f"ans/v1/{kind}/cam-1/status"
        assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")
        if component != "camera":  # a camera shows the topic's image as it is
            template = config["value_template"]
            assert template.count("{{") == template.count("}}") == 1
        if component == "binary_sensor":
            assert config.get("device_class") in DEVICE_CLASSES["binary_sensor"]
            assert {config["payload_on"], config["payload_off"]} == {"ON", "OFF"}
            assert config["state_topic"] == "ans/v1/device/cam-1/objects"
        if component == "camera":
            assert config["topic"] == "ans/v1/device/cam-1/snapshot" and "value_template" not in config
    if kind == "device":
        assert components.count("binary_sensor") == len(labels) == 3 and components.count("camera") == 1
        assert any(t.endswith("/traffic_light_count/config") for t, _ in messages)
    else:
        assert "binary_sensor" not in components and "camera" not in components
