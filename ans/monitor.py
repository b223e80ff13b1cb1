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
    """What is known of every client, from its status and stats messages.

    A client that went offline and has said nothing for ``forget_after_s`` is dropped (a
    device that was renamed or retired does not stay on the board for ever)."""

    def __init__(self, topics: Topics, forget_after_s: float | None = 600.0):
        self.topics, self.forget_after_s = topics, forget_after_s
        self.broker: str | None = None  # while set, the board says it is not connected to this broker
        self.rows: dict[tuple[str, str], dict] = {}
        self.lock = threading.Lock()

    def take(self, topic: str, payload: bytes) -> None:
        address = self.topics.parse(topic)
        if address is None or address.what not in ("status", "stats"):
            return
        kind, name, what = address.kind, address.name, address.what
        with self.lock:
            row = self.rows.setdefault((kind, name), {"status": "?", "stats": {}, "seen": None})
            row["heard"] = time.monotonic()
            if what == "status":
                row["status"] = payload.decode(errors="replace")[:16]
                return
            try:
                stats = json.loads(payload)
            except ValueError:
                stats = None
            row["stats"] = stats if isinstance(stats, dict) else {"bad": True}
            row["seen"] = row["heard"]

    def _current(self) -> list:
        now = time.monotonic()
        with self.lock:
            if self.forget_after_s is not None:
                for key in [k for k, r in self.rows.items()
                            if r["status"] != "online" and now - r["heard"] > self.forget_after_s]:
                    del self.rows[key]
            return sorted(self.rows.items())

    def tables(self):
        """Two tables, devices and edges, each fitting an 80-column terminal."""
        from rich import box
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        def table(title: str, columns: tuple[str, ...]) -> Table:
            t = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1, 0, 1), collapse_padding=True, pad_edge=False,
                      show_edge=False, expand=False)
            for k, column in enumerate(columns):
                t.add_column(column, justify="left" if k < 2 else "right", no_wrap=True)
            return t

        prefix = self.topics.base()
        devices = table(f"devices on {prefix}",
                        ("device", "status", "fps", "split", "ms mean/p95", "fallbacks", "explore", "age"))
        edges = table(f"edges on {prefix}", ("edge", "status", "req/s", "tail ms", "errors", "queue", "batch", "cpu",
                                             "age"))
        now = time.monotonic()
        for (kind, name), row in self._current():
            s = row["stats"]
            # Names, statuses and values come from the broker: shown as text, never read as markup.
            cells = [_text(name, 16), {"online": Text("online", "green"), "offline": Text("offline", "red")}.get(
                row["status"], _text(row["status"], 8))]
            age = f"{now - row['seen']:.0f} s" if row["seen"] else "-"
            if s.get("bad"):
                cells += [Text("bad stats", "red"), *[""] * (4 if kind == "device" else 5)]
            elif kind == "device":
                cells += [_num(s.get("fps"), ".1f"), _num(s.get("split")),
                          f"{_num(s.get('delay_mean_ms'), '.0f')}/{_num(s.get('delay_p95_ms'), '.0f')}",
                          _num(s.get("fallbacks")), _num(s.get("exploration_rate"), ".3f")]
            else:
                cells += [_num(s.get("requests_per_s"), ".1f"), _num(s.get("compute_mean_ms"), ".1f"),
                          _num(s.get("errors")), _num(s.get("queue_depth")), _num(s.get("batch_mean"), ".1f"),
                          _num(s.get("cpu_percent"), ".0f") + "%"]
            (devices if kind == "device" else edges).add_row(*(_text(c, 12) if isinstance(c, str) else c
                                                               for c in cells), age)
        return Group(*([Text(f"not connected to {self.broker}", "bold red")] if self.broker else []), devices, edges)


def _text(value: str, width: int):
    """Text from the broker as a cell: printable characters only, at most ``width`` columns (wide
    characters count twice), never read as markup."""
    from rich.text import Text

    text = Text("".join(c if c.isprintable() else "?" for c in value[:4 * width]))
    text.truncate(width, overflow="ellipsis")
    return text


def _num(value, spec: str = "") -> str:
    """A stats value as the table shows it; "-" when missing, as sent when it is not a number."""
    if value is None:
        return "-"
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)[:8]


def run_monitor(settings: MqttSettings, duration_s: float | None = None, forget_after_s: float | None = 600.0) -> int:
    """Watch until interrupted (or for ``duration_s``, then print the table once). Exit status 1
    when the broker never answered, 3 when it refused."""
    from rich.console import Console
    from rich.live import Live

    topics = Topics(settings.prefix)
    board = Board(topics, forget_after_s)
    host, port = parse_broker(settings.broker)
    board.broker = f"{host}:{port}"
    client = make_client("monitor", None, settings)  # read-only: no status of its own
    refused: list[str] = []
    connected = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            refused.append(str(reason_code))
            return
        board.broker = None
        connected.set()
        client.subscribe([(f, 1) for f in topics.everything("status")] + [(f, 0) for f in topics.everything("stats")])

    def on_disconnect(client, userdata, flags, reason_code, properties):
        board.broker = f"{host}:{port}"

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
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
            console.print(board.tables())
        else:
            with Live(board.tables(), console=console, refresh_per_second=2) as live:
                while not refused:
                    time.sleep(0.5)
                    live.update(board.tables())
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        client.loop_stop()
    if refused:
        print(f"ans monitor: error: broker {host}:{port} refused the connection: {refused[0]}", file=sys.stderr)
        return 3
    if not connected.is_set():
        print(f"ans monitor: error: not connected to {host}:{port}: nothing answered there", file=sys.stderr)
        return 1
    return 0
