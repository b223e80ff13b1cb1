"""``ans monitor``: every device and edge on a broker, one row each, refreshing.

Reads only what the apps publish anyway: the retained ``status`` topics (online/offline, the
Last Will) and the periodic JSON ``stats``. Built on rich (tables and live refresh).
"""

from __future__ import annotations

import json
import sys
import threading
import time

from mqtt.connection import MqttSettings, make_client, parse_broker, start
from mqtt.protocol import Topics


class Board:
    """What is known of every client, from its status and stats messages."""

    def __init__(self, topics: Topics):
        self.topics = topics
        self.rows: dict[tuple[str, str], dict] = {}
        self.lock = threading.Lock()

    def take(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if len(parts) != 5 or parts[2] not in ("device", "edge") or parts[4] not in ("status", "stats"):
            return
        kind, name, what = parts[2], parts[3], parts[4]
        with self.lock:
            row = self.rows.setdefault((kind, name), {"status": "?", "stats": {}, "seen": None})
            if what == "status":
                row["status"] = payload.decode(errors="replace")[:16]
                return
            try:
                stats = json.loads(payload)
            except ValueError:
                stats = None
            row["stats"] = stats if isinstance(stats, dict) else {"bad": True}
            row["seen"] = time.monotonic()

    def table(self):
        from rich.table import Table

        table = Table(title=f"ANS on the broker ({self.topics.prefix}/v1)", expand=False)
        for column in ("kind", "name", "status", "rate", "split", "delay mean / p95 (ms)", "fallbacks",
                       "explore", "queue", "batch", "cpu", "stats age"):
            table.add_column(column, justify="left" if column in ("kind", "name", "status") else "right")
        with self.lock:
            rows = sorted(self.rows.items())
        for (kind, name), row in rows:
            s = row["stats"]
            age = f"{time.monotonic() - row['seen']:.0f} s" if row["seen"] else "-"
            status = {"online": "[green]online[/]", "offline": "[red]offline[/]"}.get(row["status"], row["status"])
            if s.get("bad"):
                table.add_row(kind, name, status, "[red]unreadable stats[/]", *[""] * 7, age)
            elif kind == "device":
                table.add_row(kind, name, status, _num(s.get("fps"), " fps"), _num(s.get("split")),
                              f"{_num(s.get('delay_mean_ms'))} / {_num(s.get('delay_p95_ms'))}",
                              _num(s.get("fallbacks")), _num(s.get("exploration_rate")), "", "", "", age)
            else:
                table.add_row(kind, name, status, _num(s.get("requests_per_s"), " req/s"), "",
                              _num(s.get("compute_mean_ms"), " ms tail"), _num(s.get("errors")), "",
                              _num(s.get("queue_depth")), _num(s.get("batch_mean")), _num(s.get("cpu_percent"), "%"),
                              age)
        return table


def _num(value, unit: str = "") -> str:
    return "-" if value is None else f"{value}{unit}"


def run_monitor(settings: MqttSettings, duration_s: float | None = None) -> int:
    """Watch until interrupted (or for ``duration_s``, then print the table once)."""
    from rich.console import Console
    from rich.live import Live

    topics = Topics(settings.prefix)
    board = Board(topics)
    host, port = parse_broker(settings.broker)
    client = make_client("monitor", None, settings)  # read-only: no status of its own
    refused: list[str] = []

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            refused.append(str(reason_code))
            return
        client.subscribe([(topics.everything("status"), 1), (topics.everything("stats"), 0)])

    client.on_connect = on_connect
    client.on_message = lambda c, u, m: board.take(m.topic, m.payload)
    start(client, settings)
    console = Console()
    end = time.monotonic() + duration_s if duration_s else None
    try:
        if end is not None or not console.is_terminal:
            while end is None or time.monotonic() < end:
                time.sleep(0.1)
                if refused:
                    break
            console.print(board.table())
        else:
            with Live(board.table(), console=console, refresh_per_second=2) as live:
                while not refused:
                    time.sleep(0.5)
                    live.update(board.table())
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        client.loop_stop()
    if refused:
        print(f"ans monitor: error: broker {host}:{port} refused the connection: {refused[0]}", file=sys.stderr)
        return 3
    return 0
