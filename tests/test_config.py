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
    with pytest.raises(ConfigError, match="learn_codec chooses between codecs"):
        load_settings(DeviceSettings, None, "ANS_DEVICE_", {"bundle": "b", "learn_codec": True}, environ={})
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


def test_errors_name_where_the_value_came_from_and_the_nearest_key(tmp_path):
    path = tmp_path / "device.toml"
    path.write_text("bundle = '/b'\ndeadline_ms = 'soon'\n[mqtt]\nbrokr = 'mqtt://hub'\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(DeviceSettings, path, "ANS_DEVICE_", {"codec": "float32"},
                      environ={"ANS_DEVICE_STATS_INTERVAL": "3"})
    text = str(raised.value)
    assert f"deadline_ms: Input should be a valid number, unable to parse string as a number (from {path})" in text
    assert f"mqtt.brokr: Unexpected keyword argument (from {path}); did you mean mqtt.broker?" in text
    assert "stats_interval: Unexpected keyword argument (from ANS_DEVICE_STATS_INTERVAL); " \
           "did you mean stats_interval_s?" in text
    with pytest.raises(ConfigError, match=r"^deadline_ms must be positive \(from --deadline-ms\)$"):
        load_settings(DeviceSettings, None, "ANS_DEVICE_",
                      {"bundle": "b", "deadline_ms": -1}, environ={})
    with pytest.raises(ConfigError, match=r"^mqtt.broker: .* \(from --broker\)$"):
        load_settings(DeviceSettings, None, "ANS_DEVICE_", {"bundle": "b", "mqtt": {"broker": 5}}, environ={},
                      flag_names={"mqtt.broker": "--broker"})
    with pytest.raises(ConfigError, match=r"bundle: Field required \(set it in the configuration file, "
                                          r"ANS_EDGE_BUNDLE or --bundle\)"):
        load_settings(EdgeSettings, None, "ANS_EDGE_", {}, environ={})


def test_config_check_prints_the_settings_as_toml_that_loads_back(tmp_path):
    import tomllib

    from .running import ANS, ENV

    path = tmp_path / "edge.toml"
    path.write_text("bundle = '/b'\nmax_batch = 4\n[mqtt]\nbroker = 'mqtt://hub:1883'\n")
    out = subprocess.run(ANS + ["config", "check", "edge", str(path)], capture_output=True, text=True, env=ENV)
    assert out.returncode == 0, out.stderr
    assert "EdgeSettings(" not in out.stdout  # no Python repr
    again = tmp_path / "again.toml"
    again.write_text(out.stdout)
    assert tomllib.loads(out.stdout)["mqtt"]["broker"] == "mqtt://hub:1883"
    assert load_settings(EdgeSettings, again, "ANS_EDGE_", environ={}) == load_settings(EdgeSettings, path,
                                                                                        "ANS_EDGE_", environ={})
    device = tmp_path / "device.toml"
    device.write_text('bundle = "/b"\ndelegate = "libedgetpu.so.1"\ndelegate_options = { device = "usb:0" }\n')
    out = subprocess.run(ANS + ["config", "check", "device", str(device)], capture_output=True, text=True, env=ENV)
    assert out.returncode == 0, out.stderr
    again.write_text(out.stdout)
    assert load_settings(DeviceSettings, again, "ANS_DEVICE_", environ={}).delegate_options == {"device": "usb:0"}


def test_values_that_need_escaping_are_written_as_toml_that_reads_back():
    import tomllib

    from common.config import example
    from device_app.settings import DeviceSettings

    odd = 'cam "1"\nsecond line \\ and a tab\t'
    text = example(DeviceSettings, {"bundle": odd, "mqtt.broker": "mqtts://edge-host:8883"})
    doc = tomllib.loads(text)
    assert doc["bundle"] == odd and doc["mqtt"]["broker"] == "mqtts://edge-host:8883"
