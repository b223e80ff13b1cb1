"""Settings files: defaults < file < ANS_* variables < flags; unknown keys and bad values named."""

import subprocess
import sys

import pytest

pytest.importorskip("pydantic")

from common.config import ConfigError, example, load_settings  # noqa: E402
from device_app.settings import DeviceSettings  # noqa: E402
from edge_app.settings import EdgeSettings  # noqa: E402


def test_precedence_defaults_file_environment_flags(tmp_path):
    path = tmp_path / "device.toml"
    path.write_text("bundle = '/b'\ndeadline_ms = 300\n[mqtt]\nbroker = 'mqtt://hub:1883'\nprefix = 'site'\n")
    env = {"ANS_DEVICE_DEADLINE_MS": "250", "ANS_DEVICE_MQTT__BROKER": "mqtt://other:1884", "HOME": "/x"}
    s = load_settings(DeviceSettings, path, "ANS_DEVICE_", {"deadline_ms": 100.0, "policy": None}, environ=env)
    assert s.bundle == "/b" and s.deadline_ms == 100.0 and s.policy == "ans"
    assert s.mqtt.broker == "mqtt://other:1884" and s.mqtt.prefix == "site" and s.mqtt.keepalive_s == 10


def test_unknown_variables_and_values_out_of_range_are_errors():
    with pytest.raises(ConfigError, match="deadline: Unexpected keyword"):
        load_settings(DeviceSettings, None, "ANS_DEVICE_", {"bundle": "b"}, environ={"ANS_DEVICE_DEADLINE": "3"})
    with pytest.raises(ConfigError, match="deadline_ms must be positive"):
        load_settings(DeviceSettings, None, "ANS_DEVICE_", {"bundle": "b", "deadline_ms": -1}, environ={})
    with pytest.raises(ConfigError, match="policy 'oracle' is not one of"):
        load_settings(DeviceSettings, None, "ANS_DEVICE_", {"bundle": "b", "policy": "oracle"}, environ={})
    with pytest.raises(ConfigError, match="bundle: Field required"):
        load_settings(EdgeSettings, None, "ANS_EDGE_", {}, environ={})
    with pytest.raises(ConfigError, match="max_batch must be at least 1"):
        load_settings(EdgeSettings, None, "ANS_EDGE_", {"bundle": "b"}, environ={"ANS_EDGE_MAX_BATCH": "0"})


@pytest.mark.parametrize("cls, prefix", [(DeviceSettings, "ANS_DEVICE_"), (EdgeSettings, "ANS_EDGE_")])
def test_the_example_file_documents_every_field_and_loads_as_the_defaults(tmp_path, cls, prefix):
    text = example(cls, {"bundle": "/var/lib/ans/bundle"})
    path = tmp_path / "example.toml"
    path.write_text(text)
    assert load_settings(cls, path, prefix, environ={}) == cls(bundle="/var/lib/ans/bundle")
    documented = [line for line in text.splitlines() if line.startswith("# ") and "=" not in line.split()[1]]
    fields = [line.split("=")[0].strip("# ") for line in text.splitlines() if " = " in line]
    assert len(documented) >= len(fields)


def test_without_pydantic_flags_still_work_and_files_say_what_is_missing(tmp_path):
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'pydantic':
            raise ImportError('no pydantic here')
sys.meta_path.insert(0, Block())
from common.config import ConfigError, load_settings
from device_app.settings import DeviceSettings
s = load_settings(DeviceSettings, None, 'ANS_DEVICE_', {'bundle': 'b', 'mqtt': {'broker': 'mqtt://h:1'}}, environ={})
print(s.mqtt.broker)
try:
    load_settings(DeviceSettings, 'x.toml', 'ANS_DEVICE_', {}, environ={})
except ConfigError as exc:
    print(exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["mqtt://h:1", "reading x.toml needs pydantic: pip install pydantic"]


def test_the_configuration_reference_in_the_docs_is_current():
    from pathlib import Path

    from common.config import reference

    text = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    assert reference(DeviceSettings) in text and reference(EdgeSettings) in text, \
        "docs/configuration.md is stale: paste in `ans config reference device|edge`"
