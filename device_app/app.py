"""``ans device`` as a program: a Device, its frame source and its outputs (JSON lines, annotated
video, a live status line), and the summary at the end."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from common.disk import JsonLines
from common.errors import ConfigurationError
from common.service import Notifier
from mqtt.protocol import FrameRecord

from .runtime import make_device
from .settings import DeviceSettings
from .sources import open_source


class LiveLine:
    """One refreshing terminal line: frames, fps, split, delays, offloaded share, fallbacks."""

    def __init__(self, total: int | None, stream=sys.stderr):
        # On a terminal the line refreshes in place; in a log, a line every few seconds.
        self.tty = stream.isatty()
        self.total, self.stream, self.every_s = total, stream, 0.5 if self.tty else 3.0
        self.recent: deque = deque(maxlen=60)
        self.last = 0.0

    def __call__(self, frame: np.ndarray, record: FrameRecord) -> None:
        self.recent.append((time.monotonic(), record))
        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        self.last = now
        times = [t for t, _ in self.recent]
        delays = np.array([r.delay_s for _, r in self.recent]) * 1e3
        fps = (len(times) - 1) / max(times[-1] - times[0], 1e-9) if len(times) > 1 else 0.0
        off = np.mean([r.offloaded for _, r in self.recent])
        where = "fallback" if record.fallback else f"split {record.split:>2}"
        of = f"/{self.total}" if self.total else ""
        lead = "\r" if self.tty else ""
        print(f"{lead}frame {record.frame + 1}{of}  {fps:5.1f} fps  {where}  delay {np.median(delays):6.1f} ms "
              f"(p95 {np.percentile(delays, 95):6.1f})  offloaded {off:4.0%}  ", end="" if self.tty else "\n",
              file=self.stream, flush=True)

    def close(self) -> None:
        if self.last and self.tty:
            print(file=self.stream)


def summarise(records: list[FrameRecord], device_only: int) -> dict:
    delays = np.array([r.delay_s for r in records]) if records else np.zeros(1)
    splits = np.bincount([r.split for r in records], minlength=device_only + 1) if records else []
    return {
        "frames": len(records),
        "offloaded": sum(r.offloaded for r in records),
        "fallbacks": sum(r.fallback for r in records),
        "median_delay_ms": round(float(np.median(delays)) * 1e3, 2),
        "p95_delay_ms": round(float(np.percentile(delays, 95)) * 1e3, 2),
        "split_histogram": [int(n) for n in splits],
    }


def _results_file(path: str) -> JsonLines:
    """The results file; a path that cannot be a file (no such folder, no permission) is the
    configuration's fault (exit 2), anything else at opening is not."""
    try:
        return JsonLines(path)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        raise ConfigurationError(f"results_out {path}: cannot write there: {exc.strerror}") from None


def run_device(settings: DeviceSettings, stop: threading.Event | None = None, live: bool = False,
               notifier: Notifier | None = None, on_frame=None) -> str:
    source = settings.source
    if source != "demo" and not source.startswith("camera:") and not Path(source).is_file():
        raise ConfigurationError(f"{source}: no such video file")  # now, not after calibrating and connecting
    device = make_device(settings, notifier=notifier)
    records: list[FrameRecord] = []
    sinks = [lambda frame, record: records.append(record)]
    if on_frame is not None:
        sinks.append(lambda frame, record: on_frame(record))
    with contextlib.ExitStack() as stack:
        if settings.results_out:
            out = _results_file(settings.results_out)
            stack.callback(out.close)
            sinks.append(lambda frame, record: device.write_or_say(out.path, out.write, record.to_json()))
        if settings.video_out:
            from .annotate import AnnotatedVideo, Overlay

            video = AnnotatedVideo(settings.video_out, Overlay(device.model.labels, device.model.device_only))
            stack.callback(video.close)
            sinks.append(video.write)
        if settings.snapshot_interval_s > 0:
            from .annotate import Overlay, Snapshots

            sinks.append(Snapshots(device.publish_snapshot, Overlay(device.model.labels, device.model.device_only),
                                   settings.snapshot_interval_s))
        if live:
            line = LiveLine(settings.frames)
            stack.callback(line.close)
            sinks.append(line)
        device.run(open_source(settings.source, settings.frames, settings.loop), stop, sinks)
    summary = summarise(records, device.model.device_only)
    local = summary["frames"] - summary["offloaded"] - summary["fallbacks"]
    return (f"{summary['frames']} frames: {summary['offloaded']} answered by the edge, {summary['fallbacks']} "
            f"meant for the edge but finished on the device (edge away, late or refusing), {local} on the "
            f"device by choice; median delay {summary['median_delay_ms']:.1f} ms, p95 {summary['p95_delay_ms']:.1f} ms; "
            f"splits {summary['split_histogram']}")
