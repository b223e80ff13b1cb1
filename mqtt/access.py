"""Who may do what on the production broker: Mosquitto's dynamic security plugin (shipped with
Mosquitto 2.0), with one role per kind of client and one per client for its own topics.

Unlike an ACL file, the plugin refuses a SUBSCRIBE that its roles do not allow, so a device
cannot join the edges' shared subscription (where the broker would hand it other devices'
requests, then drop them) nor subscribe to another device's results. Mosquitto 2.0's plugin
has no ``%u`` substitution, so each device and edge gets a role naming its own topics.

Everything is denied unless a role allows it. Kinds:

* ``device``: publishes its own request, status, stats, detections, objects, snapshot and its
  one Home Assistant discovery config; subscribes to its own result and stats (where a second
  device with its id would show) and to the edges' status, stats, compute tables and load.
* ``edge``: the edges' shared subscription to every request, publishes every result, its own
  status, stats, compute table, load and discovery config.
* ``monitor`` (``ans monitor``): reads status and stats, objects, detections, edge loads and
  compute tables (``observed``), never a request or a result; publishes nothing.
* ``homeassistant``: the same plus discovery, publishes its own birth message
  (``homeassistant/status``). Snapshots (camera pictures) only with ``ans-snapshots``.

The production config sets ``use_username_as_clientid``: a client's id is its user name, so no
user can take over another's session, and each user holds one session at a time.

The same definitions make the plugin's initial file (``security_document``) and the commands
sent to a running broker (``client_commands``, through ``Control``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import queue
import secrets
import uuid

from .discovery import config_topic
from .protocol import Topics

KINDS = ("device", "edge", "monitor", "homeassistant")
SNAPSHOTS = "ans-snapshots"
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
DISCOVERY = "homeassistant"


def _acl(acltype: str, topic: str) -> dict:
    return {"acltype": acltype, "topic": topic, "priority": 0, "allow": True}


def _reads(*filters: str, pattern: bool = False) -> list[dict]:
    """Subscribing to exactly these filters (or any filter inside them, ``pattern``) and receiving what they match."""
    kind = "subscribePattern" if pattern else "subscribeLiteral"
    return [acl for f in filters for acl in (_acl(kind, f), _acl("publishClientReceive", f))]


def _writes(*topics: str) -> list[dict]:
    return [_acl("publishClientSend", t) for t in topics]


def observed(prefix: str = "ans") -> list[str]:
    """What observers (``ans monitor``, Home Assistant) may read: every client's status and stats, a
    device's objects and detections, an edge's load and compute table. Never a request or a result:
    those carry camera frames and cut tensors."""
    t = Topics(prefix)
    return [t.every("device", what) for what in ("status", "stats", "objects", "detections")] + \
        [t.every("edge", what) for what in ("status", "stats", "load", "compute")]


def kind_roles(prefix: str = "ans", group: str = "ans-edges", discovery_prefix: str = DISCOVERY) -> list[dict]:
    """The roles every client of a kind shares; ``ans-snapshots`` is an observer's opt-in to the
    devices' annotated snapshots (camera pictures)."""
    t = Topics(prefix)
    return [
        {"rolename": "ans-device", "acls": _reads(t.every_edge_status(), t.every("edge", "stats"),
                                                  t.every_edge_compute(), t.every_edge_load())},
        {"rolename": "ans-edge", "acls": [_acl("subscribeLiteral", t.shared_requests(group)),
                                          _acl("publishClientReceive", t.every("device", "request"))]
         + _writes(t.every("device", "result"))},
        {"rolename": "ans-monitor", "acls": _reads(*observed(prefix), pattern=True)},
        {"rolename": "ans-homeassistant", "acls": _reads(*observed(prefix), f"{discovery_prefix}/#", pattern=True)
         + _writes(f"{discovery_prefix}/status")},
        {"rolename": SNAPSHOTS, "acls": _reads(t.every("device", "snapshot"), pattern=True)},
    ]


def own_role(kind: str, name: str, prefix: str = "ans", discovery_prefix: str = DISCOVERY) -> dict | None:
    """The role naming a device's or an edge's own topics (None for kinds that have none). Its Home
    Assistant discovery is one exact topic: a client cannot store retained messages anywhere else
    under the discovery prefix, nor write another client's config."""
    t = Topics(prefix)
    discovery = config_topic(name, discovery_prefix)
    if kind == "device":
        acls = _writes(t.request(name), t.device_status(name), t.device_stats(name), t.detections(name),
                       t.objects(name), t.snapshot(name), discovery) \
            + _reads(t.result(name), t.device_stats(name))
    elif kind == "edge":
        acls = _writes(t.edge_status(name), t.edge_stats(name), t.edge_compute(name), t.edge_load(name), discovery)
    else:
        return None
    return {"rolename": f"ans-{kind}-{name}", "acls": acls}


def _check(kind: str, name: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    Topics().request(name)  # a valid topic level: 1-64 bytes, no '/', '+', '#'


def roles_of(kind: str, name: str, snapshots: bool = False) -> list[str]:
    """The roles a client of ``kind`` holds: its kind's, its own (devices, edges), and observers'
    opt-in to snapshots."""
    roles = [f"ans-{kind}"] + ([f"ans-{kind}-{name}"] if kind in ("device", "edge") else [])
    return roles + ([SNAPSHOTS] if snapshots and kind in ("monitor", "homeassistant") else [])


def client_commands(kind: str, name: str, password: str | None, prefix: str = "ans",
                    discovery_prefix: str = DISCOVERY, snapshots: bool = False) -> list[dict]:
    """Control-API commands that add client ``name`` of ``kind`` to a running broker. Without a
    password the client can only log in with a certificate (``use_identity_as_username``)."""
    _check(kind, name)
    own = own_role(kind, name, prefix, discovery_prefix)
    commands = [{"command": "createRole", **own}] if own is not None else []
    client = {"command": "createClient", "username": name,
              "roles": [{"rolename": role} for role in roles_of(kind, name, snapshots)]}
    if password is not None:
        client["password"] = password
    return commands + [client]


def remove_commands(kind: str, name: str) -> list[dict]:
    _check(kind, name)
    commands = [{"command": "deleteClient", "username": name}]
    if kind in ("device", "edge"):
        commands.append({"command": "deleteRole", "rolename": f"ans-{kind}-{name}"})
    return commands


def switch_commands(kind: str, name: str, enabled: bool, snapshots: bool = False) -> list[dict]:
    """Let a client in again, or stop it. Disabling refuses its password logins and closes its
    session; a certificate login is not checked at CONNECT (``use_identity_as_username``), so its
    roles go too: it may connect, but every publish and subscribe is refused until enabled."""
    _check(kind, name)
    roles = roles_of(kind, name, snapshots)
    if enabled:
        return [{"command": "enableClient", "username": name}] + [
            {"command": "addClientRole", "username": name, "rolename": role} for role in roles]
    return [{"command": "removeClientRole", "username": name, "rolename": role} for role in roles] + [
        {"command": "disableClient", "username": name}]


def hashed(password: str, iterations: int = 101) -> dict:
    """The plugin's stored form of a password: PBKDF2-SHA512 over a random 12-byte salt."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return {"salt": base64.b64encode(salt).decode(), "password": base64.b64encode(digest).decode(),
            "iterations": iterations}


def security_document(admin: str, admin_password: str, clients: list[tuple[str, str, str | None]] = (),
                      prefix: str = "ans", group: str = "ans-edges") -> dict:
    """The plugin's initial file: an administrator (who may only use the control API), the kind
    roles, and ``clients`` as (kind, name, password or None)."""
    control = "$CONTROL/dynamic-security/#"
    roles = kind_roles(prefix, group) + [{"rolename": "ans-admin",
                                          "acls": _reads(control, pattern=True) + _writes(control)}]
    users = [{"username": admin, "roles": [{"rolename": "ans-admin"}], **hashed(admin_password)}]
    for kind, name, password in clients:
        for command in client_commands(kind, name, password, prefix):
            body = {k: v for k, v in command.items() if k not in ("command", "password")}
            if command["command"] == "createRole":
                roles.append(body)
            else:
                users.append({**body, **(hashed(password) if password is not None else {})})
    return {"clients": users, "groups": [], "roles": roles,
            "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False, "subscribe": False,
                                 "unsubscribe": True}}


def new_password() -> str:
    return secrets.token_urlsafe(18)


class ControlError(RuntimeError):
    """The broker refused a control command (or did not answer)."""


class Control:
    """Sends dynamic-security commands to a running broker as its administrator."""

    def __init__(self, settings, timeout_s: float = 10.0):
        from .connection import make_client, parse_broker

        self.timeout_s = timeout_s
        self.responses: queue.Queue = queue.Queue()
        self.connected: queue.Queue = queue.Queue()
        self.subscribed: queue.Queue = queue.Queue()
        self.client = make_client(f"ans-admin-{uuid.uuid4().hex[:6]}", None, settings)
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.put(rc)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.put(rcs)
        self.client.on_message = lambda c, u, m: self.responses.put(m.payload)
        host, port = parse_broker(settings.broker)
        self.client.connect(host, port)
        self.client.loop_start()
        try:
            reason = self.connected.get(timeout=timeout_s)
        except queue.Empty:
            raise ControlError(f"broker {host}:{port} did not answer") from None
        if reason.is_failure:
            raise ControlError(f"broker {host}:{port} refused the administrator: {reason}")
        self.client.subscribe(f"{CONTROL_TOPIC}/response", qos=1)
        try:
            granted = self.subscribed.get(timeout=timeout_s)
        except queue.Empty:
            raise ControlError("the broker did not answer the subscription to the control responses") from None
        if granted[0].is_failure:
            raise ControlError(f"this user may not use the control API: {granted[0]}")

    def run(self, commands: list[dict]) -> None:
        """Every command, in order; ControlError naming the first the broker refused."""
        self.client.publish(CONTROL_TOPIC, json.dumps({"commands": commands}), qos=1).wait_for_publish(self.timeout_s)
        try:
            answer = json.loads(self.responses.get(timeout=self.timeout_s))
        except queue.Empty:
            raise ControlError("the broker did not answer the control command (is the dynamic security plugin "
                               "loaded, and may this user use it?)") from None
        for response in answer.get("responses", []):
            if response.get("error"):
                raise ControlError(f"{response.get('command')}: {response['error']}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
