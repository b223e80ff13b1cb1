"""The edge app's settings: a documented dataclass that `common.config` fills from
/etc/ans/edge.toml and `ANS_EDGE_*` variables."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.errors import ConfigurationError
from mqtt.connection import MqttSettings


@dataclass
class EdgeSettings:
    """One edge process: the bundle it serves and how it batches."""

    __pydantic_config__ = {"extra": "forbid", "use_attribute_docstrings": True}

    bundle: str
    """Bundle folder written by `ans convert` (the edge reads the manifest and tails/model.keras)."""
    id: str = "edge-1"
    """This edge's name on the broker (its status and stats topics; its user name on a production broker)."""
    group: str = "ans-edges"
    """MQTT v5 shared-subscription group: edges in one group share the requests between them."""
    max_batch: int = 8
    """Most requests run together as one batch (same split, arrived together). On a GPU, 32-64 (see
    bench/bench_edge_gpu.sh for the batch size past which requests/s stop growing)."""
    xla: bool = False
    """Compile each tail with XLA (`jit_compile`): faster on a GPU for most models; each new batch
    size compiles once (a pause of a second or so the first time)."""
    batch_wait_ms: float = 0.0
    """After the first request of a batch, wait at most this long for more. 0: never wait; a batch
    is what queued while the previous one ran, so a lone request starts at once."""
    queue_size: int = 256
    """Requests held while the tail is busy; beyond it, requests are answered with an error at once."""
    per_device_queue: int = 16
    """Requests held for any one device: a device past its share is answered with an error (its
    frames finish on the device), the others keep their turns."""
    error_replies_per_s: float = 5.0
    """Error replies per second to any one device (bursts of twice that); beyond it errors are
    counted in the stats (`errors_unanswered`) but not answered, so a flood cannot fill the
    edge's outgoing queue."""
    max_request_mb: float = 32.0
    """Largest request accepted (as the shipped broker's max_packet_size)."""
    stats_interval_s: float = 10.0
    """Seconds between stats messages (JSON on <prefix>/v1/edge/<id>/stats)."""
    home_assistant: bool = False
    """Publish Home Assistant MQTT discovery for this edge's sensors."""
    discovery_prefix: str = "homeassistant"
    """Home Assistant's MQTT discovery prefix (its `discovery_prefix`)."""
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    """The broker."""

    def __post_init__(self) -> None:
        problems = []
        if self.max_batch < 1:
            problems.append("max_batch must be at least 1")
        if self.batch_wait_ms < 0:
            problems.append("batch_wait_ms must not be negative")
        if self.queue_size < 1 or self.per_device_queue < 1:
            problems.append("queue_size and per_device_queue must be at least 1")
        if not self.error_replies_per_s > 0:
            problems.append("error_replies_per_s must be positive")
        if not self.max_request_mb > 0 or not self.stats_interval_s > 0:
            problems.append("max_request_mb and stats_interval_s must be positive")
        if problems:
            raise ConfigurationError("; ".join(problems))
