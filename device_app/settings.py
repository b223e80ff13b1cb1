"""The device app's settings: a plain dataclass (the core needs no pydantic), documented field
by field; `common.config` fills it from /etc/ans/device.toml and `ANS_DEVICE_*` variables."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.errors import ConfigurationError
from mqtt.codec import CODECS, IMAGE_CODECS
from mqtt.connection import MqttSettings

#: Policies a real device can run (the simulator's oracle and Neurosurgeon need the true delays).
DEVICE_POLICIES = ("ans", "mu-linucb-paper", "linucb", "device-only", "edge-only")


@dataclass
class DeviceSettings:
    """One device: where frames come from, how it decides, how it reaches the edge."""

    __pydantic_config__ = {"extra": "forbid", "use_attribute_docstrings": True}

    bundle: str
    """Bundle folder written by `ans convert` (the device reads the manifest and the TFLite segments)."""
    id: str = "device-1"
    """This device's name on the broker (its topics, and its user name on a production broker)."""
    source: str = "camera:0"
    """Frames: a video file, `camera:N` (OpenCV), or `demo` (the generated demo clip)."""
    frames: int | None = None
    """Stop after this many frames (not set: until the source ends, or for ever for a camera)."""
    loop: bool = False
    """Play a video file (or `demo`) again from the start when it ends, until `frames` or a stop."""
    policy: str = "ans"
    """Split-selection policy: ans (default), mu-linucb-paper (the paper's algorithm), linucb, device-only or
    edge-only."""
    codec: str = "float32"
    """How the cut tensors travel: float32, float16 (half the bytes), int8 (a quarter), or int4, int3, int2 (each
    channel quantised within its calibrated range and entropy-coded: a fraction of a bit per value where activations
    are sparse; needs a bundle converted with sample images); or auto: per split, the fewest bytes among the codecs
    within `max_map_loss` (split 0 included: uint8 or jpeg). `ans convert --report` and `bench/bench_codec.py` show
    what each costs in accuracy, split by split."""
    image_codec: str = "uint8"
    """How split 0 sends the input (unless `codec` is auto): uint8 (its 8-bit image, a quarter of float32, bit for
    bit the same input) or jpeg (quality 90: a few percent of that, lossy; needs OpenCV on the device and the edge)."""
    learn_codec: bool = False
    """With `codec = "auto"`: also offer, at each split, the fewest-bytes codec among those that only convert each
    value (int8, float16, uint8: cheap to encode), and let the learner choose between the two with the split. Pays
    where encoding costs more than the bytes it saves (a fast link, a slow CPU); on links that drop every few seconds
    the first frames after each drop cost more than it saves (docs/performance.md)."""
    max_map_loss: float = 0.01
    """With `codec = "auto"`: the most mAP@0.5 (absolute) a codec may lose at a split, as `ans convert --report`
    measured it in the bundle (its detections against float32's own); float32, float16 and the input's 8-bit image
    need no measurement. Without a report, auto sends those only."""
    deadline_ms: float = 500.0
    """A result later than this after sending: the frame is finished on the device and the learner is told."""
    connect_timeout_s: float = 30.0
    """At start, wait this long for the broker's answer once its address accepts the connection (not at all when
    nothing listens there); then run device-only until it comes (frames are never held back)."""
    state_dir: str | None = None
    """Where the calibration and the learner state are kept, so a restart resumes (systemd: /var/lib/ans)."""
    stats_interval_s: float = 10.0
    """Seconds between stats messages (JSON on <prefix>/v1/device/<id>/stats) and learner-state saves."""
    threads: int | None = None
    """TFLite interpreter threads (not set: the interpreter's default)."""
    delegate: str | None = None
    """A LiteRT delegate library to run the segments on an accelerator, e.g. `libedgetpu.so.1` (Coral),
    `libtensorflowlite_gpu_delegate.so` (GPU). Not set: the CPU (XNNPACK). A delegate that cannot be
    loaded, or a segment it cannot run, falls back to the CPU with a warning."""
    delegate_options: dict[str, str] = field(default_factory=dict)
    """Options passed to the delegate, e.g. `{ device = "usb" }` for an Edge TPU."""
    fused_heads: int = 1
    """How many heads run fused into one model: the head of a split used 3 times in a row is fused in the
    background (one interpreter call instead of one per segment) for the splits used last, where the first
    start's calibration found that faster. Each holds its weights in memory once more. 0: always run the
    segments one after another."""
    initial_state: str | None = None
    """A learner state file saved by another device on the same bundle (its `state_dir`/learner.json), to
    start from when this device has none of its own yet: it joins a fleet knowing what that device learnt
    (as a weak prior: it counts `resume_weight` / 5). Not set: start from the edge's compute table alone."""
    resume_weight: float = 0.25
    """At a restart the learner resumes from its saved state as a prior: each saved observation counts this
    much of a fresh one (0 < w <= 1), and a fifth of that if the state was learnt through another broker or
    with another edge."""
    emulate_slowdown: float = 1.0
    """Demo/lab only: make every head run this many times slower, to stand in for a slower board on a fast machine."""
    results_out: str | None = None
    """Also write one JSON line per frame to this file."""
    video_out: str | None = None
    """Also write the frames, with their detections drawn, to this video file (needs OpenCV)."""
    snapshot_interval_s: float = 0.0
    """Publish the latest frame, detections drawn, as a JPEG (retained) on the device's snapshot topic
    at most this often, for a Home Assistant camera entity; 0: never (frames stay on the device).
    Needs OpenCV."""
    home_assistant: bool = False
    """Publish Home Assistant MQTT discovery so this device's sensors (stats, and per label an object count
    and an "object present" binary sensor) appear there by themselves."""
    discovery_prefix: str = "homeassistant"
    """Home Assistant's MQTT discovery prefix (its `discovery_prefix`)."""
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    """The broker."""

    def __post_init__(self) -> None:
        problems = []
        if self.policy not in DEVICE_POLICIES:
            problems.append(f"policy {self.policy!r} is not one of {', '.join(DEVICE_POLICIES)}")
        if self.codec not in (*CODECS, "auto"):
            problems.append(f"codec {self.codec!r} is not one of {', '.join(CODECS)} or auto")
        if not 0 <= self.max_map_loss <= 1:
            problems.append("max_map_loss must lie in [0, 1]")
        if self.learn_codec and self.codec != "auto":
            problems.append(f"learn_codec chooses between codecs that codec = \"auto\" allows; with codec "
                            f"{self.codec!r} there is one")
        if self.image_codec not in IMAGE_CODECS:
            problems.append(f"image_codec {self.image_codec!r} is not one of {', '.join(IMAGE_CODECS)}")
        for name in ("deadline_ms", "stats_interval_s", "emulate_slowdown"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be positive")
        if self.emulate_slowdown < 1:
            problems.append("emulate_slowdown must be at least 1")
        if not 0 < self.resume_weight <= 1:
            problems.append("resume_weight must lie in (0, 1]")
        if self.fused_heads < 0:
            problems.append("fused_heads must not be negative")
        if self.snapshot_interval_s < 0:
            problems.append("snapshot_interval_s must not be negative")
        if self.connect_timeout_s < 0:
            problems.append("connect_timeout_s must not be negative")
        if self.frames is not None and self.frames < 0:
            problems.append("frames must not be negative")
        if problems:
            raise ConfigurationError("; ".join(problems))
