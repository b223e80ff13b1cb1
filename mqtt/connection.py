"""Broker settings and paho-mqtt 2.x clients set up the same way on device and edge."""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from common.errors import ConfigurationError, CredentialsRefused
from common.logs import RateLimitedLog

#: CONNACK reasons that retrying cannot fix: wrong credentials, or not allowed at all.
FATAL_REFUSALS = ("Bad user name or password", "Not authorized", "Banned", "Client identifier not valid")


class BrokerRefused(CredentialsRefused):
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
    """mqtts: the private key of `cert_file`."""
    keepalive_s: int = 10
    """MQTT keep-alive; the broker announces a vanished client `offline` after 1.5 times this."""
    reconnect_max_s: float = 1.0
    """After losing the broker, retry after 0.25 s, doubling up to this: offloading resumes within
    about this long of the broker's return."""

    def __post_init__(self) -> None:
        parse_broker(self.broker)
        if self.keepalive_s < 1:
            raise ConfigurationError("keepalive_s must be at least 1")
        if not 0.25 <= self.reconnect_max_s <= 300:
            raise ConfigurationError("reconnect_max_s must lie between 0.25 and 300")
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigurationError("cert_file and key_file go together")
        if not self.tls and (self.ca_file or self.cert_file):
            raise ConfigurationError("ca_file, cert_file and key_file need an mqtts:// broker")

    @property
    def tls(self) -> bool:
        return self.broker.startswith("mqtts://")

    def password(self) -> str | None:
        if self.password_file is None:
            return None
        try:
            return Path(self.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigurationError(f"password_file {self.password_file}: cannot read: {exc.strerror}") from None


def parse_broker(url: str) -> tuple[str, int]:
    """``mqtt://host:port`` or ``mqtts://host:port`` (or ``host:port``, or ``host``) -> (host, port)."""
    parsed = urlparse(url if "://" in url else f"mqtt://{url}")
    if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
        raise ConfigurationError(f"broker {url!r}: expected mqtt://host[:port] or mqtts://host[:port]")
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
                raise ConfigurationError(f"{name} {getattr(settings, name)}: no such file")
        client.tls_set(ca_certs=settings.ca_file, certfile=settings.cert_file, keyfile=settings.key_file)
    client.on_socket_open = _no_delay
    return client


def start(client, settings: MqttSettings) -> bool:
    """Connect and start the network thread; False when the broker is not there yet (paho retries
    with back-off), so that nobody waits for an answer that cannot come. A TLS handshake that fails
    (a wrong CA, a refused certificate) is not worth retrying: BrokerRefused says what failed, once."""
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
        return False
    client.loop_start()
    return True


def _no_delay(client, userdata, sock) -> None:
    """Send each message at once: with Nagle's algorithm a request waits for the broker's delayed
    ACK (40 ms on Linux), the largest part of the offloading delay on a fast link."""
    import socket

    if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def max_packet_size(properties) -> int | None:
    """The broker's Maximum Packet Size from its CONNACK properties (None: no limit announced)."""
    return getattr(properties, "MaximumPacketSize", None) if properties is not None else None


class SessionGuard:
    """What the broker says of this client's session, turned into one line each and a verdict.

    * A CONNACK that refuses for a reason retrying cannot fix (credentials, a ban): remembered, and
      paho's retries stopped, so the service exits (3) instead of hammering the broker.
    * A TLS connection closed by the broker before any CONNACK, within ``TLS_DROP_WITHIN_S`` of
      opening, ``TLS_DROPS`` times in a row: it refused this client's certificate after the
      handshake (TLS 1.3 says so only then); the same verdict.
    * A SUBACK that refuses one of its own topics: a disabled user (certificate logins are not
      checked at CONNECT) or an id that is not this user's; the same verdict.
    * A session closed by the broker and re-opened at once, ``BOUNCES`` times within
      ``BOUNCE_WINDOW_S``: another client logs in as this one (a copied password or certificate,
      a second device with this id) and the broker hands it the session. Said once, and paho
      waits ``BACK_OFF_S`` between attempts instead of fighting; normal once a session holds.
      Only a client that logs in can be taken over (the production broker makes its user name its
      id; without one the id is this process's own), and "at once" means that the first attempt
      after the loss found the broker: a broker that restarts (an upgrade, a crash) closes every
      session as a takeover does (Mosquitto 2.0 says neither) but refuses the attempts made while
      it is down. Three restarts in a minute are then no takeover, unless each took under the
      first retry's 0.25 s, which the line says too.
    * A refused publish (MQTT 5 PUBACK): counted and said at most once a minute.

    Callbacks are installed here; ``on_lost`` (the app's) runs after a lost session is judged."""

    TLS_DROPS, TLS_DROP_WITHIN_S = 3, 5.0
    BOUNCES, BOUNCE_WINDOW_S, BOUNCE_GAP_S = 3, 60.0, 5.0
    BACK_OFF_S = (30.0, 120.0)
    #: A session that lasted this long ends a back-off.
    SETTLED_S = 120.0

    def __init__(self, client, settings: MqttSettings, name: str, log, on_lost=None):
        self.host, self.port = parse_broker(settings.broker)
        self.settings, self.name, self.log, self.on_lost = settings, name, log, on_lost
        self.logs = RateLimitedLog(log)
        # Why the broker refused this client for good: set once, by paho's thread, and never changed
        # after, so any thread may read it (``check``, the device's wait for an edge) without a lock.
        self.reason: str | None = None
        self.up_since: float | None = None  # monotonic time of the CONNACK of the session now open
        self.lost_at: float | None = None
        self.unreached = False  # an attempt since the session was lost found no broker
        self.own_id = settings.username is not None or settings.cert_file is not None  # the id is the login's
        self.tls_drops = 0
        self.bounces: list[float] = []
        self.backing_off = False
        self.refused_publishes = 0
        self.opened_at: float | None = None  # when the socket of the attempt now running opened
        self._client = client
        self._subscriptions: dict[int, list[str]] = {}
        opened = client.on_socket_open

        def on_socket_open(client, userdata, sock) -> None:
            self.opened_at = time.monotonic()
            if opened is not None:
                opened(client, userdata, sock)
        client.on_socket_open = on_socket_open
        client.on_connect_fail = self._unreachable
        client.on_disconnect = self._lost
        client.on_subscribe = self._subscribed
        client.on_publish = self._published

    def subscribe(self, topics: list[tuple[str, int]]) -> None:
        """Subscribe (in ``on_connect``); a refusal of any of these is a verdict, not a warning."""
        rc, mid = self._client.subscribe(topics)
        if rc == 0 and mid is not None:
            self._subscriptions[mid] = [t for t, _ in topics]

    def accepted(self, client, reason_code) -> bool:
        if reason_code.is_failure:
            self.log.error("broker %s:%d refused the connection: %s", self.host, self.port, reason_code)
            if str(reason_code) in FATAL_REFUSALS:
                self._give_up(client, str(reason_code))
            return False
        now = time.monotonic()
        self.tls_drops = 0
        if self.own_id and self.lost_at is not None and now - self.lost_at < self.BOUNCE_GAP_S and not self.unreached:
            self.bounces = [t for t in self.bounces if now - t < self.BOUNCE_WINDOW_S] + [now]
            if len(self.bounces) >= self.BOUNCES and not self.backing_off:
                self.backing_off = True
                client.reconnect_delay_set(*self.BACK_OFF_S)
                self.log.error("the broker closed this session %d times in %.0f s, each time re-opened at once: "
                               "another client is logging in as %s (a second device with this id, or its password "
                               "or certificate copied; or the broker restarted that often, in under 0.25 s each "
                               "time); waiting %.0f-%.0f s between reconnects instead of fighting over the session",
                               len(self.bounces), self.BOUNCE_WINDOW_S, self.name,
                               *self.BACK_OFF_S)
        self.up_since = now
        return True

    def _lost(self, client, userdata, flags, reason_code, properties) -> None:
        now = time.monotonic()
        up_for = now - self.up_since if self.up_since is not None else None
        self.up_since = None
        closed_at_once = str(reason_code) == "Unspecified error" and self.opened_at is not None \
            and now - self.opened_at < self.TLS_DROP_WITHIN_S  # by the broker, not a keep-alive timeout
        if up_for is None and closed_at_once and self.settings.tls and self.reason is None:
            self.tls_drops += 1  # closed before any CONNACK: after the handshake, the broker said no
            if self.tls_drops >= self.TLS_DROPS:
                self._give_up(client, f"it closed the TLS connection before answering, {self.tls_drops} times in a "
                                      "row: it refuses this client's certificate (none given, one not signed by the CA "
                                      "it trusts, or one revoked)")
        elif up_for is not None and reason_code.is_failure:
            self.lost_at, self.unreached = now, False
            self.log.warning("lost the broker %s:%d after %.0f s (%s)", self.host, self.port, up_for, reason_code)
            if str(reason_code) == "Administrative action":
                self.log.error("the broker's administrator closed this session (%s disabled or removed? "
                               "'ans broker enable' lets it back in)", self.name)
            if self.backing_off and up_for >= self.SETTLED_S:
                self.backing_off = False
                client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=self.settings.reconnect_max_s)
        if self.on_lost is not None:
            self.on_lost(reason_code)

    def _unreachable(self, client, userdata) -> None:
        self.unreached = True

    def _subscribed(self, client, userdata, mid, reason_codes, properties) -> None:
        topics = self._subscriptions.pop(mid, [])
        refused = [(t, rc) for t, rc in zip(topics, reason_codes) if rc.is_failure]
        if refused and self.reason is None:
            self._give_up(client, f"it refuses the subscription to {refused[0][0]} ({refused[0][1]}): {self.name} "
                                  "is disabled, or this id is not the user's (the id must equal the user name or "
                                  "the certificate's CN)")

    def _published(self, client, userdata, mid, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.refused_publishes += 1
            self.logs.error("refused-publish", "broker %s:%d refused a publish of %s: %s (%d so far; does this id "
                            "match the user it logs in as?)", self.host, self.port, self.name, reason_code,
                            self.refused_publishes)

    def _give_up(self, client, why: str) -> None:
        if self.reason is None:  # the first verdict stands
            self.reason = why
        client.disconnect()

    def check(self) -> None:
        if self.reason is not None:
            raise BrokerRefused(f"broker {self.host}:{self.port} refused {self.name}: {self.reason}")


class Outbox:
    """Every publish checked: one that the outgoing queue cannot take (the broker away for long) is
    counted (``count("unsent")``) and said at most once a minute, never dropped in silence."""

    def __init__(self, client, count, log):
        self.client, self.count, self.logs = client, count, RateLimitedLog(log)

    def publish(self, topic: str, payload: str | bytes, qos: int = 1, retain: bool = False) -> bool:
        """False when the outgoing queue was full (nothing queued); True when sent or queued."""
        from paho.mqtt.enums import MQTTErrorCode

        if self.client.publish(topic, payload, qos=qos, retain=retain).rc != MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            return True
        self.count("unsent")
        self.logs.warning("unsent", "the outgoing queue is full (broker away?): %s was not sent, nor will more be "
                          "until the broker is back (counted as unsent)", topic[:120])
        return False


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
