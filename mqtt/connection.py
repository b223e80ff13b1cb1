"""Broker settings and paho-mqtt 2.x clients set up the same way on device and edge."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

#: CONNACK reasons that retrying cannot fix: wrong credentials, or not allowed at all.
FATAL_REFUSALS = ("Bad user name or password", "Not authorized", "Banned", "Client identifier not valid")


class BrokerRefused(RuntimeError):
    """The broker refused this client for a reason retrying will not fix (credentials, ban)."""


@dataclass
class MqttSettings:
    """How to reach the broker (both apps)."""

    __pydantic_config__ = {"extra": "forbid", "use_attribute_docstrings": True}

    broker: str = "mqtt://127.0.0.1:1883"
    """Broker address: mqtt://host[:port] (port 1883), or mqtts://host[:port] for TLS (port 8883)."""
    username: str | None = None
    """User name for brokers with authentication (the production config expects the device or edge id)."""
    password_file: str | None = None
    """File holding the password, kept out of the config file. Under the shipped systemd units this
    is set for you to the credential systemd passes in (a copy of /etc/ans/<role>.password, which
    stays root's, mode 600): the service user never reads /etc/ans directly."""
    prefix: str = "ans"
    """Topic prefix: every topic lives under <prefix>/v1/."""
    ca_file: str | None = None
    """mqtts: the CA certificate that signed the broker's certificate (not set: the system's CAs)."""
    cert_file: str | None = None
    """mqtts: this client's certificate, for brokers that require one (its CN is then the user name)."""
    key_file: str | None = None
    """mqtts: the private key of ``cert_file``."""
    keepalive_s: int = 10
    """MQTT keep-alive; the broker announces a vanished client ``offline`` after 1.5 times this."""
    reconnect_max_s: float = 1.0
    """After losing the broker, retry after 0.25 s, doubling up to this: offloading resumes within
    about this long of the broker's return."""

    def __post_init__(self) -> None:
        parse_broker(self.broker)
        if self.keepalive_s < 1:
            raise ValueError("keepalive_s must be at least 1")
        if not 0.25 <= self.reconnect_max_s <= 300:
            raise ValueError("reconnect_max_s must lie between 0.25 and 300")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if not self.tls and (self.ca_file or self.cert_file):
            raise ValueError("ca_file, cert_file and key_file need an mqtts:// broker")

    @property
    def tls(self) -> bool:
        return self.broker.startswith("mqtts://")

    def password(self) -> str | None:
        if self.password_file is None:
            return None
        try:
            return Path(self.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"password_file {self.password_file}: cannot read: {exc.strerror}") from None


def parse_broker(url: str) -> tuple[str, int]:
    """``mqtt://host:port`` or ``mqtts://host:port`` (or ``host:port``, or ``host``) -> (host, port)."""
    parsed = urlparse(url if "://" in url else f"mqtt://{url}")
    if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
        raise ValueError(f"broker {url!r}: expected mqtt://host[:port] or mqtts://host[:port]")
    return parsed.hostname, parsed.port or (8883 if parsed.scheme == "mqtts" else 1883)


#: First retry after a lost connection; paho doubles it up to ``reconnect_max_s``.
RECONNECT_MIN_S = 0.25


def make_client(name: str, status_topic: str | None, settings: MqttSettings | None = None, queued: int = 100):
    """An MQTT v5 client with a unique id, bounded queues (``queued`` outgoing messages held while
    the broker is slow or away), credentials, prompt reconnects, and ``offline`` as the retained
    Last Will on its status topic (if it has one)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    settings = settings or MqttSettings()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(20)
    client.max_queued_messages_set(queued)
    if status_topic is not None:
        client.will_set(status_topic, b"offline", qos=1, retain=True)
    client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=settings.reconnect_max_s)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password())
    if settings.tls:
        for name in ("ca_file", "cert_file", "key_file"):
            if getattr(settings, name) is not None and not Path(getattr(settings, name)).is_file():
                raise ValueError(f"{name} {getattr(settings, name)}: no such file")
        client.tls_set(ca_certs=settings.ca_file, certfile=settings.cert_file, keyfile=settings.key_file)
    client.on_socket_open = _no_delay
    return client


def start(client, settings: MqttSettings) -> None:
    """Connect and start the network thread. A broker that is not there yet is retried by paho
    (with back-off); a TLS handshake that fails (a wrong CA, a refused certificate) is not worth
    retrying: BrokerRefused says what failed, once."""
    import ssl

    host, port = parse_broker(settings.broker)
    try:
        client.connect(host, port, keepalive=settings.keepalive_s)
    except ssl.SSLError as exc:
        if isinstance(exc, ssl.SSLCertVerificationError):
            why = f"certificate verify failed: {exc.verify_message} (check ca_file: it must be the CA that signed " \
                  "the broker's certificate, and the broker's name must be in it)"
        else:
            why = f"{exc.reason or exc} (the broker refused this client's certificate, or the TLS settings do not match)"
        raise BrokerRefused(f"TLS with broker {host}:{port} failed: {why}") from None
    except OSError:  # not there yet (or a name that does not resolve yet): paho keeps trying
        client.connect_async(host, port, keepalive=settings.keepalive_s)
    client.loop_start()


def _no_delay(client, userdata, sock) -> None:
    """Send each message at once: with Nagle's algorithm a request waits for the broker's delayed
    ACK (40 ms on Linux), the largest part of the offloading delay on a fast link."""
    import socket

    if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def max_packet_size(properties) -> int | None:
    """The broker's Maximum Packet Size from its CONNACK properties (None: no limit announced)."""
    return getattr(properties, "MaximumPacketSize", None) if properties is not None else None


class Refusal:
    """A client's CONNACK verdicts: logs every refusal, and remembers one that retrying cannot fix
    (credentials, a ban) while stopping paho's retries, so the service can exit instead of
    hammering the broker."""

    def __init__(self, host: str, port: int, name: str, log):
        self.host, self.port, self.name, self.log = host, port, name, log
        self.reason: str | None = None

    def accepted(self, client, reason_code) -> bool:
        if not reason_code.is_failure:
            return True
        self.log.error("broker %s:%d refused the connection: %s", self.host, self.port, reason_code)
        if str(reason_code) in FATAL_REFUSALS:
            self.reason = str(reason_code)
            client.disconnect()
        return False

    def check(self) -> None:
        if self.reason is not None:
            raise BrokerRefused(f"broker {self.host}:{self.port} refused {self.name}: {self.reason}")


def go_offline(client, status_topic: str) -> None:
    """Say ``offline`` (retained) while still connected, then disconnect and stop the network
    thread. When the outgoing queue cannot take it, disconnect asking the broker to publish the
    Last Will (which says the same) instead."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    said = False
    if client.is_connected():
        info = client.publish(status_topic, b"offline", qos=1, retain=True)
        if info.rc == 0:
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(2)
            said = info.is_published()
    client.disconnect(reasoncode=None if said else ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
    client.loop_stop()
