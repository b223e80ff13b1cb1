"""Broker addresses and paho-mqtt 2.x clients set up the same way on device and edge."""

from __future__ import annotations

import uuid
from urllib.parse import urlparse


def parse_broker(url: str) -> tuple[str, int]:
    """``mqtt://host:port`` (or ``host:port``, or ``host``) -> (host, port)."""
    parsed = urlparse(url if "://" in url else f"mqtt://{url}")
    if parsed.scheme != "mqtt" or not parsed.hostname:
        raise ValueError(f"broker {url!r}: expected mqtt://host[:port]")
    return parsed.hostname, parsed.port or 1883


def make_client(name: str, status_topic: str):
    """An MQTT v5 client with a unique id, bounded queues, and ``offline`` as its retained Last Will."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(20)
    client.max_queued_messages_set(100)
    client.will_set(status_topic, b"offline", qos=1, retain=True)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


def go_offline(client, status_topic: str) -> None:
    """Say ``offline`` (retained) while still connected, then disconnect and stop the network thread."""
    if client.is_connected():
        client.publish(status_topic, b"offline", qos=1, retain=True).wait_for_publish(2)
    client.disconnect()
    client.loop_stop()
