"""ANS's devices and edges use standard MQTT 5 only, so any compliant broker (a Mosquitto, or a
cluster such as EMQX, HiveMQ or VerneMQ) carries them: shared subscriptions in the standard
``$share/<group>/<filter>`` form, retained messages, Last Will, QoS 0/1, Maximum Packet Size from
CONNACK. Broker-specific features (``$SYS`` topics, Mosquitto's control API) stay in the broker's
own administration (``ans broker``, ``mqtt/access.py``), never on the data path."""

import ast
import re
from pathlib import Path

from mqtt.protocol import Topics

REPO = Path(__file__).resolve().parents[1]
DATA_PATH = [*sorted((REPO / "device_app").rglob("*.py")), *sorted((REPO / "edge_app").rglob("*.py")),
             REPO / "mqtt" / "protocol.py", REPO / "mqtt" / "connection.py", REPO / "mqtt" / "codec.py",
             REPO / "mqtt" / "discovery.py"]
TOPIC_LEVEL = re.compile(r"^[^+#/\0]{1,64}$")


def _strings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_no_broker_specific_topic_or_api_on_the_data_path():
    for path in DATA_PATH:
        for text in _strings(path):
            assert "$SYS" not in text and "$CONTROL" not in text, f"{path.name}: {text[:80]!r}"
        source = path.read_text(encoding="utf-8")
        assert "import mqtt.access" not in source and "from mqtt.access" not in source, path.name
        assert "from .access" not in source, path.name


def test_every_topic_is_plain_mqtt_and_the_shared_subscription_is_the_standard_form():
    t = Topics("ans")
    names = [t.request("cam-1"), t.result("cam-1"), t.device_status("cam-1"), t.device_stats("cam-1"),
             t.detections("cam-1"), t.objects("cam-1"), t.snapshot("cam-1"), t.edge_status("edge-1"),
             t.edge_stats("edge-1"), t.edge_compute("edge-1"), t.edge_load("edge-1")]
    for name in names:
        assert all(TOPIC_LEVEL.match(level) for level in name.split("/")), name
    filters = [t.every_edge_status(), t.every_edge_compute(), t.every_edge_load(), *t.everything("stats")]
    for f in filters:
        assert all(level == "+" or TOPIC_LEVEL.match(level) for level in f.split("/")), f
    share, group, *rest = t.shared_requests("ans-edges").split("/")
    assert share == "$share" and TOPIC_LEVEL.match(group) and "/".join(rest) == "ans/v1/device/+/request"


def test_clients_speak_mqtt_5_with_standard_features_only():
    source = (REPO / "mqtt" / "connection.py").read_text(encoding="utf-8")
    assert "protocol=mqtt.MQTTv5" in source and "will_set" in source
    assert "MaximumPacketSize" in source or "max_packet_size" in source
