"""Home Assistant MQTT device discovery, checked against what Home Assistant's schema requires: one
config topic per client, the device block and origin, availability, and per component the keys its
platform needs and a unique id; a device announces per label an object count and an "object
present" sensor, and names no client but itself."""

import json
import re

import pytest

from mqtt.discovery import config_topic, discovery_message
from mqtt.protocol import Topics

TOPIC = re.compile(r"^(?P<prefix>[^/#+]+)/device/(?P<node>[A-Za-z0-9_-]+)/config$")
#: Keys Home Assistant requires or reads, per platform (MQTT sensor, binary sensor and camera schemas).
REQUIRED = {"sensor": {"state_topic"}, "binary_sensor": {"state_topic"}, "camera": {"topic"}}
ALLOWED = {"p", "name", "unique_id", "state_topic", "value_template", "expire_after", "unit_of_measurement",
           "state_class", "payload_on", "payload_off", "device_class", "topic"}
DEVICE_CLASSES = {"binary_sensor": {"occupancy", "motion", "presence", None}}


@pytest.mark.parametrize("kind, labels", [("device", ["person", "car", "traffic light"]), ("edge", [])])
def test_discovery_payload_follows_the_home_assistant_schema(kind, labels):
    topic, payload = discovery_message(kind, "cam-1", Topics("ans"), 10.0, "ha-test", labels, snapshot=True)
    match = TOPIC.match(topic)
    assert match and match["prefix"] == "ha-test" and match["node"] == "ans_cam-1", topic
    assert topic == config_topic("cam-1", "ha-test")
    config = json.loads(payload)
    assert config["dev"]["identifiers"] == ["ans_cam-1"] and config["o"]["name"] == "ANS"
    assert config["availability_topic"] == f"ans/v1/{kind}/cam-1/status"
    assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")
    platforms = []
    for key, component in config["cmps"].items():
        platform = component["p"]
        platforms.append(platform)
        assert REQUIRED[platform] <= set(component) <= ALLOWED, (key, set(component) - ALLOWED)
        assert key == component["unique_id"] and key.startswith("ans_cam-1_") and component["name"]
        for field in ("state_topic", "topic"):  # every topic it reads is this client's own
            assert component.get(field, f"ans/v1/{kind}/cam-1/").startswith(f"ans/v1/{kind}/cam-1/")
        if platform != "camera":  # a camera shows the topic's image as it is
            template = component["value_template"]
            assert template.count("{{") == template.count("}}") == 1
        if platform == "binary_sensor":
            assert component.get("device_class") in DEVICE_CLASSES["binary_sensor"]
            assert {component["payload_on"], component["payload_off"]} == {"ON", "OFF"}
            assert component["state_topic"] == "ans/v1/device/cam-1/objects"
        if platform == "camera":
            assert component["topic"] == "ans/v1/device/cam-1/snapshot" and "value_template" not in component
    if kind == "device":
        assert platforms.count("binary_sensor") == len(labels) == 3 and platforms.count("camera") == 1
        assert "ans_cam-1_traffic_light_count" in config["cmps"]
    else:
        assert "binary_sensor" not in platforms and "camera" not in platforms
