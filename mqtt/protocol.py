"""The device <-> edge messages: a binary inference request, a JSON result with the timing
acknowledgement, and the topic tree. Numpy and the standard library only, so the device
(or a non-Python client following docs/protocol.md) can speak it.

A request is a little-endian header (fixed part, then per cut tensor its shape and quantisation)
followed by the raw cut tensors one after another; the edge decodes them without copying. Nothing
received is ever unpickled.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import asdict, dataclass, field

import numpy as np

from .codec import VARIABLE, WIRE_CODECS, ChannelRange, CodecError, Quantisation, RangeMismatch, decode, payload_bytes

MAGIC = b"ANS1"
#: The request format: 3 says each payload's length (variable-size codecs); 2 carried several cut
#: tensors of fixed size, 1 one. Either side refuses another version.
VERSION = 3
#: The topic tree's version (its own: the request format can change under the same topics).
TOPIC_VERSION = 1
MAX_DIMS = 8
#: The most tensors one request carries.
MAX_TENSORS = 8
#: Seconds between an edge's load reports (devices price the queueing wait they would add by them).
LOAD_PERIOD_S = 1.0
# magic, header length, version, codec, number of tensors, flags, frame id, split, reserved, bundle
# hash (16 bytes); then per tensor: ndim, quantisation scale and zero point, payload length, ndim
# uint32 dims.
_FIXED = struct.Struct("<4sHBBBBQHH16s")
_TENSOR = struct.Struct("<B3xfiI")


class ProtocolError(ValueError):
    """A message that does not follow the protocol, with what is wrong. ``kind`` names the problem
    from a small fixed set (the text carries frame ids and sizes), so that a receiver can count
    and log per kind without one entry per distinct message."""

    def __init__(self, message: str, kind: str = "malformed"):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Request:
    frame_id: int
    split: int
    bundle_hash: bytes  # the first 16 bytes of the manifest's content hash
    shapes: tuple[tuple[int, ...], ...]  # of each cut tensor, in the split's order
    codec: str = "float32"
    quants: tuple[Quantisation, ...] = ()  # of each tensor (int8); none for the float codecs
    sizes: tuple[int, ...] = ()  # payload bytes of each tensor (read from a header; written from the payloads)

    @property
    def header_size(self) -> int:
        return _FIXED.size + sum(_TENSOR.size + 4 * len(shape) for shape in self.shapes)


def bundle_hash_bytes(content_hash: str) -> bytes:
    """The 16 bytes of a manifest's hex content hash that travel in every request."""
    return bytes.fromhex(content_hash[:32])


def request_size(shapes: list[list[int]], codec: str) -> int:
    """Bytes of the request message for cut tensors of ``shapes`` sent as ``codec`` (at most, for a
    variable-size codec)."""
    return _FIXED.size + sum(_TENSOR.size + 4 * len(shape) + payload_bytes(shape, codec) for shape in shapes)


def encode_request(request: Request, payloads: list[bytes | memoryview]) -> bytes:
    """Header + payloads in one buffer: the tensor bytes are copied once, here."""
    if not 0 < len(request.shapes) <= MAX_TENSORS or len(payloads) != len(request.shapes):
        raise ProtocolError(f"{len(payloads)} payloads for {len(request.shapes)} tensors; 1 to {MAX_TENSORS} travel")
    if any(len(shape) > MAX_DIMS for shape in request.shapes):
        raise ProtocolError(f"a tensor has more than {MAX_DIMS} dimensions")
    if len(request.bundle_hash) != 16:
        raise ProtocolError("bundle hash must be 16 bytes")
    quants = request.quants or (Quantisation(),) * len(request.shapes)
    parts = [_FIXED.pack(MAGIC, request.header_size, VERSION, WIRE_CODECS.index(request.codec), len(request.shapes), 0,
                         request.frame_id, request.split, 0, request.bundle_hash)]
    for shape, quant, payload in zip(request.shapes, quants, payloads):
        if not _fits(len(payload), shape, request.codec):
            raise ProtocolError(f"payload of {len(payload)} bytes does not match {request.codec} shape {shape}")
        parts.append(_TENSOR.pack(len(shape), quant.scale, quant.zero_point, len(payload)))
        parts.append(struct.pack(f"<{len(shape)}I", *shape))
    return b"".join((*parts, *payloads))


def decode_header(message: bytes | bytearray | memoryview, max_bytes: int | None = None) -> Request:
    """The request's header alone (what an error reply needs to name the frame)."""
    view = memoryview(message)
    if max_bytes is not None and len(view) > max_bytes:
        raise ProtocolError(f"message of {len(view)} bytes exceeds the limit of {max_bytes}", "too-large")
    if len(view) < _FIXED.size:
        raise ProtocolError(f"message of {len(view)} bytes is shorter than the {_FIXED.size}-byte header")
    magic, header_size, version, codec_id, count, _flags, frame_id, split, _reserved, bundle_hash = \
        _FIXED.unpack_from(view, 0)
    if magic != MAGIC:
        raise ProtocolError(f"not an ANS request (magic {bytes(magic)!r})")
    if version != VERSION:
        raise ProtocolError(f"request format version {version} is not supported (this side speaks {VERSION})",
                            "version")
    if codec_id >= len(WIRE_CODECS):
        raise ProtocolError(f"unknown codec id {codec_id}")
    if not 0 < count <= MAX_TENSORS:
        raise ProtocolError(f"{count} tensors; a request carries 1 to {MAX_TENSORS}")
    if not _FIXED.size <= header_size <= len(view):
        raise ProtocolError(f"header of {header_size} bytes does not fit in {len(view)} bytes")
    codec = WIRE_CODECS[codec_id]
    shapes, quants, sizes, at = [], [], [], _FIXED.size
    for _ in range(count):
        if at + _TENSOR.size > header_size:
            raise ProtocolError(f"header of {header_size} bytes does not fit {count} tensors")
        ndim, scale, zero_point, size = _TENSOR.unpack_from(view, at)
        at += _TENSOR.size
        if ndim > MAX_DIMS or at + 4 * ndim > header_size:
            raise ProtocolError(f"header of {header_size} bytes does not fit a tensor of {ndim} dimensions")
        shape = tuple(struct.unpack_from(f"<{ndim}I", view, at))
        if not _fits(size, shape, codec):
            raise ProtocolError(f"a {codec} payload of {size} bytes cannot carry shape {list(shape)}", "payload")
        shapes.append(shape)
        quants.append(Quantisation(float(scale), int(zero_point)))
        sizes.append(size)
        at += 4 * ndim
    if at != header_size:
        raise ProtocolError(f"header says {header_size} bytes, its tensors take {at}")
    return Request(frame_id, split, bytes(bundle_hash), tuple(shapes), codec, tuple(quants), tuple(sizes))


def _fits(size: int, shape, codec: str) -> bool:
    """A payload of ``size`` bytes can carry ``shape``: exactly its size, or at most for a variable codec."""
    bound = payload_bytes(shape, codec)
    return size <= bound if codec in VARIABLE else size == bound


def decode_request(message: bytes | bytearray | memoryview, max_bytes: int | None = None,
                   channel_ranges: list[ChannelRange | None] | None = None) -> tuple[Request, list[np.ndarray]]:
    """The request and its float32 tensors (views into ``message`` for float32). ``channel_ranges``:
    the calibrated range of each of the split's tensors, for the low-bit codecs."""
    request = decode_header(message, max_bytes)
    view = memoryview(message)
    if request.header_size + sum(request.sizes) != len(view):
        raise ProtocolError(f"frame {request.frame_id}: {len(view) - request.header_size} payload bytes for tensors "
                            f"of {sum(request.sizes)}", "payload")
    ranges = channel_ranges or [None] * len(request.shapes)
    tensors, at = [], request.header_size
    try:
        for shape, quant, size, channels in zip(request.shapes, request.quants, request.sizes, ranges):
            tensors.append(decode(view[at:at + size], request.codec, shape, quant, channels))
            at += size
    except RangeMismatch as exc:
        raise ProtocolError(f"frame {request.frame_id}: {exc}", "bundle") from None
    except CodecError as exc:
        raise ProtocolError(f"frame {request.frame_id}: {exc}", "payload") from None
    return request, tensors


@dataclass(frozen=True)
class Result:
    """The edge's answer to one request: detections (or an error) and the timing acknowledgement.

    ``wait_s`` is receive-to-start on the edge (queueing, batching), ``compute_s`` the tail's
    run; together with the device's own send-to-receive time they split the offloading
    delay into network and edge parts.
    """

    frame_id: int
    split: int
    status: str  # "ok" or "error"
    detections: list[list[float]] = field(default_factory=list)  # x1, y1, x2, y2, score, class (0..1)
    error: str = ""
    error_kind: str = ""  # what kind of refusal (ProtocolError.kind): "bundle" means no split of this device's will do
    wait_s: float = 0.0
    compute_s: float = 0.0
    batch_size: int = 1
    edge: str = ""


@dataclass(frozen=True)
class Timing:
    """How the edge's answer to one frame took its time: the device's offloading delay (from sending
    the encoded request to the result), and the edge's acknowledgement of its part."""

    offload_s: float
    edge_compute_s: float
    edge_wait_s: float
    batch_size: int


@dataclass(frozen=True)
class FrameRecord:
    """One frame's final answer, wherever it was computed: what a device publishes on its
    ``detections`` topic, writes to its results file and hands to its sinks."""

    frame: int
    split: int  # the split chosen (device-only: the last)
    fallback: bool  # meant for the edge, finished on the device (edge away, late or refusing)
    delay_s: float
    detections: list[list[float]]  # x1, y1, x2, y2 (relative), score, class: as the protocol carries them
    objects: list[dict]  # label, score, box in pixels of the source frame
    edge: str | None  # the edge that answered; None when the device finished the frame
    edge_online: bool  # whether an edge was online when the frame was processed
    finished_from: int | None = None  # the split whose cut the device finished from, after a fallback
    timing: Timing | None = None  # when the edge answered
    codec: str | None = None  # what the cut travelled with, when the device sent it

    @property
    def offloaded(self) -> bool:
        return self.edge is not None

    def to_json(self) -> bytes:
        return _strict_json(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> FrameRecord:
        """A record from its JSON form (a results file's line, a detections message)."""
        doc = json.loads(text)
        timing = doc.get("timing")
        return cls(**{**doc, "timing": Timing(**timing) if timing else None})


def _strict_json(doc: dict) -> bytes:
    """A message's fields as strict JSON (no NaN or Infinity, which other languages' parsers refuse)."""
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def encode_result(result: Result) -> bytes:
    """From the fields themselves (all plain values and lists): ``asdict``'s deep copy of every
    detection cost more than the JSON, on every reply."""
    return _strict_json(vars(result))


def decode_result(message: bytes) -> Result:
    try:
        doc = json.loads(message)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"result is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError("result must be a JSON object")
    try:
        result = Result(**doc)
    except TypeError as exc:
        raise ProtocolError(f"result has unexpected or missing fields: {exc}") from None
    def finite(v) -> bool:
        return isinstance(v, (int, float)) and math.isfinite(v)

    if (not isinstance(result.frame_id, int) or not isinstance(result.split, int)
            or result.status not in ("ok", "error")
            or not all(isinstance(v, str) for v in (result.error, result.error_kind, result.edge))
            or not isinstance(result.batch_size, int) or result.batch_size < 1
            or not all(finite(v) and v >= 0 for v in (result.wait_s, result.compute_s))
            or not isinstance(result.detections, list)
            or not all(isinstance(d, list) and len(d) == 6 and all(finite(v) for v in d) for d in result.detections)):
        raise ProtocolError(f"result for frame {doc.get('frame_id')!r} has malformed fields")
    return result


#: A compute table bigger than this is not read (a bundle has at most a few hundred splits).
MAX_TABLE_BYTES = 65536


@dataclass(frozen=True)
class ComputeTable:
    """What an edge publishes about its own speed: the tail compute time of every split (seconds,
    one request alone; ``None`` for device-only) for the bundle with ``bundle`` content hash, on
    ``accelerator``. A device joining the fleet starts its edge model from it."""

    bundle: str
    edge: str
    compute_s: list[float | None]
    accelerator: str = ""


def encode_compute_table(table: ComputeTable) -> bytes:
    return _strict_json(asdict(table))


def decode_compute_table(message: bytes, n_splits: int) -> ComputeTable:
    """A table whose every field is what it says (finite times under a minute, one per split)."""
    if len(message) > MAX_TABLE_BYTES:
        raise ProtocolError(f"compute table of {len(message)} bytes exceeds {MAX_TABLE_BYTES}", "too-large")
    try:
        doc = json.loads(message)
        table = ComputeTable(**doc)
    except (ValueError, UnicodeDecodeError, TypeError) as exc:
        raise ProtocolError(f"compute table is not a JSON object of the expected fields: {exc}") from None
    times = table.compute_s
    if (not all(isinstance(v, str) for v in (table.bundle, table.edge, table.accelerator))
            or not isinstance(times, list) or len(times) != n_splits
            or not all(v is None or (isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v < 60)
                       for v in times)):
        raise ProtocolError(f"compute table from {str(doc.get('edge'))[:64]!r} has malformed fields")
    return table


@dataclass(frozen=True)
class LoadReport:
    """An edge's load over its last report period: busy fraction of its tail runner, mean queueing
    wait of the requests it started, mean run time of a tail call, requests queued now."""

    utilisation: float
    wait_s: float
    service_s: float
    queue: int


class LoadWindow:
    """What the next load report says: tail-runner time, runs and waits since the last one. The
    clock is the caller's (the edge's monotonic time, the fleet simulator's simulated time)."""

    def __init__(self, now: float) -> None:
        self._reset(now)

    def _reset(self, now: float) -> None:
        self.since = now
        self.busy = 0.0
        self.runs = 0
        self.waits: list[float] = []

    def batch(self, compute_s: float, waits: list[float]) -> None:
        self.busy += compute_s
        self.runs += 1
        self.waits.extend(waits)

    def report(self, queue: int, now: float) -> LoadReport:
        """The report for the window ending ``now``, which starts the next one."""
        span = max(now - self.since, 1e-6)
        report = LoadReport(min(self.busy / span, 1.0), float(np.mean(self.waits)) if self.waits else 0.0,
                            self.busy / self.runs if self.runs else 0.0, queue)
        self._reset(now)
        return report


def encode_load(report: LoadReport) -> bytes:
    return _strict_json(asdict(report))


def decode_load(message: bytes) -> LoadReport:
    if len(message) > 1024:
        raise ProtocolError(f"load report of {len(message)} bytes exceeds 1024", "too-large")
    try:
        report = LoadReport(**json.loads(message))
    except (ValueError, UnicodeDecodeError, TypeError) as exc:
        raise ProtocolError(f"load report is not a JSON object of the expected fields: {exc}") from None
    numbers = (report.utilisation, report.wait_s, report.service_s)
    if (not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v < 3600
                for v in numbers) or report.utilisation > 1.0
            or not isinstance(report.queue, int) or isinstance(report.queue, bool) or report.queue < 0):
        raise ProtocolError("load report has malformed fields")
    return report


@dataclass(frozen=True)
class Address:
    """Where a message was published: ``<prefix>/v1/<kind>/<name>/<what>``."""

    kind: str  # "device" or "edge"
    name: str
    what: str  # "request", "result", "status", "stats", ...


@dataclass(frozen=True)
class Topics:
    """The topic tree, versioned under a configurable prefix. Topics are made and read here only."""

    prefix: str = "ans"

    def _base(self) -> str:
        return f"{self.prefix}/v{TOPIC_VERSION}"

    def base(self) -> str:
        """``<prefix>/v1``: everything of this tree lies under it."""
        return self._base()

    def parse(self, topic: str) -> Address | None:
        """The kind, client and message of a topic of this tree; None for any other topic (another
        prefix or version, another depth, a client name that is not a valid topic level)."""
        parts = topic.split("/")
        if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != self._base() or parts[2] not in ("device", "edge"):
            return None
        try:
            return Address(parts[2], _name(parts[3]), parts[4])
        except ProtocolError:
            return None

    def every(self, kind: str, what: str) -> str:
        """Every ``kind`` client's ``what`` (a filter)."""
        return f"{self._base()}/{kind}/+/{what}"

    def request(self, device: str) -> str:
        return f"{self._base()}/device/{_name(device)}/request"

    def result(self, device: str) -> str:
        return f"{self._base()}/device/{_name(device)}/result"

    def device_status(self, device: str) -> str:
        return f"{self._base()}/device/{_name(device)}/status"

    def detections(self, device: str) -> str:
        """The device's final answer for every frame (JSON), wherever it was computed."""
        return f"{self._base()}/device/{_name(device)}/detections"

    def objects(self, device: str) -> str:
        """Objects per label in the device's latest frame (JSON, retained, published on change)."""
        return f"{self._base()}/device/{_name(device)}/objects"

    def snapshot(self, device: str) -> str:
        """The device's latest frame with its detections drawn (JPEG, retained, rate-limited; opt-in)."""
        return f"{self._base()}/device/{_name(device)}/snapshot"

    def device_stats(self, device: str) -> str:
        return f"{self._base()}/device/{_name(device)}/stats"

    def edge_status(self, edge: str) -> str:
        return f"{self._base()}/edge/{_name(edge)}/status"

    def edge_stats(self, edge: str) -> str:
        return f"{self._base()}/edge/{_name(edge)}/stats"

    def edge_compute(self, edge: str) -> str:
        """The edge's per-split tail compute time for its bundle (JSON, retained; ``ComputeTable``)."""
        return f"{self._base()}/edge/{_name(edge)}/compute"

    def edge_load(self, edge: str) -> str:
        """The edge's load, about once a second (JSON, ``LoadReport``): what devices price their wait by."""
        return f"{self._base()}/edge/{_name(edge)}/load"

    def every_edge_load(self) -> str:
        return self.every("edge", "load")

    def every_edge_compute(self) -> str:
        """What devices subscribe to, to start from what the edges know about their own speed."""
        return self.every("edge", "compute")

    def every_edge_status(self) -> str:
        """What devices subscribe to, to know which edges are online."""
        return self.every("edge", "status")

    def everything(self, what: str) -> list[str]:
        """Every device's and every edge's ``status`` or ``stats`` (what ``ans monitor`` watches): one
        filter per kind, as the observers' roles name them."""
        return [self.every(kind, what) for kind in ("device", "edge")]

    def requesting_device(self, topic: str) -> str:
        """The device id in a request topic; ProtocolError (kind ``topic``) for any other topic,
        so that nothing derived from it can fail later, in the reply path."""
        head, sep, rest = topic.partition(f"{self._base()}/device/")
        device, _, tail = rest.partition("/")
        if head or not sep or tail != "request":
            raise ProtocolError(f"{topic[:120]!r} is not a request topic", "topic")
        return _name(device)

    def shared_requests(self, group: str = "ans-edges") -> str:
        """What edges subscribe to: every device's requests, shared among the group (MQTT v5)."""
        return f"$share/{_name(group)}/{self._base()}/device/+/request"


def _name(part: str) -> str:
    if not part or any(c in part for c in "/+#\0") or len(part.encode()) > 64:
        raise ProtocolError(f"{part[:80]!r} is not a valid topic level (1-64 bytes, no '/', '+', '#')", "topic")
    return part
