"""Configuration files: one TOML file per app, checked by pydantic, with environment overrides.

The settings themselves are plain dataclasses (``DeviceSettings``, ``EdgeSettings``) so the
device core needs no pydantic; this module is what a service uses to fill them. Order of
precedence: defaults < the file < ``ANS_DEVICE_*`` / ``ANS_EDGE_*`` variables < command-line
flags. Nested keys use ``__`` in variables: ``ANS_DEVICE_MQTT__BROKER=mqtt://hub:1883``.
Unknown keys, in the file or in a variable, are errors: a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import typing
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigurationError

T = TypeVar("T")


class ConfigError(ConfigurationError):
    """A configuration that cannot be used, with every problem named."""


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def env_overrides(prefix: str, environ: dict[str, str] | None = None) -> dict:
    """``{PREFIX}A__B=v`` variables as ``{"a": {"b": "v"}}`` (pydantic turns the strings into the field types)."""
    found: dict = {}
    for name, value in (os.environ if environ is None else environ).items():
        if not name.startswith(prefix) or name == f"{prefix}CONFIG":
            continue
        *parents, leaf = name[len(prefix):].lower().split("__")
        node = found
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = None if value == "" else value
    return found


def load_settings(cls: type[T], path: str | Path | None, env_prefix: str, overrides: dict | None = None,
                  environ: dict[str, str] | None = None, flag_names: dict[str, str] | None = None) -> T:
    """``cls`` filled from the TOML file at ``path`` (optional), the environment and ``overrides``
    (command-line flags; ``flag_names`` maps a dotted key to its flag where it is not ``--the-key``).

    Every problem names the key, where its value came from (the file, the variable or the flag)
    and, for an unknown key, the nearest known one."""
    env = env_overrides(env_prefix, environ)
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        from pydantic import TypeAdapter, ValidationError
    except ImportError:  # a minimal device install: flags only, checked by the dataclasses themselves
        if path is not None or env:
            raise ConfigError(f"reading {path or env_prefix + '* variables'} needs pydantic: pip install pydantic")
        try:
            return _build(cls, flags)
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
    doc: dict = {}
    if path is not None:
        try:
            doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the configuration: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return TypeAdapter(cls).validate_python(_merge(_merge(doc, env), flags))
    except ValidationError as exc:
        sources = _Sources(path, doc, env_prefix, env, flags, flag_names or {})
        raise ConfigError("; ".join(sources.explain(cls, err) for err in exc.errors())) from None


class _Sources:
    """Where each key's value came from, to say so in an error."""

    def __init__(self, path, doc: dict, env_prefix: str, env: dict, flags: dict, flag_names: dict[str, str]):
        self.path, self.doc, self.env_prefix, self.env, self.flags = path, doc, env_prefix, env, flags
        self.flag_names = flag_names

    def _flag(self, keys: list[str]) -> str:
        return self.flag_names.get(".".join(keys), "--" + keys[-1].replace("_", "-"))

    def _variable(self, keys: list[str]) -> str:
        return self.env_prefix + "__".join(k.upper() for k in keys)

    def origin(self, keys: list[str]) -> str:
        if _has(self.flags, keys):
            return self._flag(keys)
        if _has(self.env, keys):
            return self._variable(keys)
        return str(self.path) if self.path is not None and _has(self.doc, keys) else "the defaults"

    def explain(self, cls: type, err: dict) -> str:
        keys = [str(p) for p in err["loc"] if isinstance(p, str)]
        if not keys:  # a check across fields (the settings' own __post_init__): its message names the key
            message = err["msg"].removeprefix("Value error, ")
            named = message.split()[0].split(".") if message else []
            known = named and named[-1] in _field_names(cls, named[:-1])
            return f"{message} (from {self.origin(named)})" if known else message
        dotted = ".".join(keys)
        if err["type"] == "missing":
            where = f"the configuration file, {self._variable(keys)} or {self._flag(keys)}"
            return f"{dotted}: {err['msg']} (set it in {where})"
        text = f"{dotted}: {err['msg']} (from {self.origin(keys)})"
        if err["type"] == "unexpected_keyword_argument" and keys:
            nearest = difflib.get_close_matches(keys[-1], _field_names(cls, keys[:-1]), n=1, cutoff=0.6)
            if nearest:
                text += f"; did you mean {'.'.join([*keys[:-1], nearest[0]])}?"
        return text


def _has(doc: dict, keys: list[str]) -> bool:
    node: Any = doc
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def _field_names(cls: type, parents: list[str]) -> list[str]:
    """The known keys of the section ``parents`` of ``cls``."""
    for name in parents:
        hint = typing.get_type_hints(cls).get(name) if dataclasses.is_dataclass(cls) else None
        if hint is None or not dataclasses.is_dataclass(hint):
            return []
        cls = hint
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []


def as_toml(settings: Any) -> str:
    """Settings as the TOML that would give them: what ``ans config check`` prints."""
    top, sections = [], []
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if dataclasses.is_dataclass(value):
            sections.append(f"\n[{field.name}]\n" + as_toml(value).rstrip("\n"))
        else:
            top.append(f"# {field.name} =   (not set)" if value is None else f"{field.name} = {_toml_value(value)}")
    return "\n".join(top + sections) + "\n"


def _build(cls: type[T], doc: dict) -> T:
    hints = typing.get_type_hints(cls)
    return cls(**{k: _build(hints[k], v) if isinstance(v, dict) and dataclasses.is_dataclass(hints.get(k)) else v
                  for k, v in doc.items()})


def _toml_value(value: Any) -> str:
    """A value as TOML on one line (the reference table and ``key = value`` lines need one): scalars
    and keys written by tomli-w, which escapes them right; arrays and inline tables around them."""
    import tomli_w

    if isinstance(value, dict):
        return "{" + ", ".join(f"{tomli_w.dumps({str(k): 0}).rsplit(' = ', 1)[0]} = {_toml_value(v)}"
                               for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).removeprefix("v = ").removesuffix("\n")


def example(cls: type, required: dict[str, Any]) -> str:
    """A commented TOML file with every field of ``cls``, its documentation and its default;
    ``required``: values set instead, by dotted key (``bundle``, ``mqtt.broker``)."""
    from pydantic import TypeAdapter

    schema = TypeAdapter(cls).json_schema()
    lines: list[str] = []

    def section(props: dict, defaults: Any, prefix: str) -> None:
        nested = []
        for field in dataclasses.fields(defaults if dataclasses.is_dataclass(defaults) else cls):
            spec = props[field.name]
            if "$ref" in spec:
                nested.append((field.name, spec))
                continue
            for doc_line in spec.get("description", "").splitlines():
                lines.append(f"# {doc_line}")
            value = getattr(defaults, field.name) if defaults is not None else None
            if f"{prefix}{field.name}" in required:
                lines.append(f"{field.name} = {_toml_value(required[prefix + field.name])}")
            elif value is None:
                lines.append(f"# {field.name} =   (not set)")
            else:
                lines.append(f"{field.name} = {_toml_value(value)}")
            lines.append("")
        for name, spec in nested:
            ref = schema["$defs"][spec["$ref"].split("/")[-1]]
            lines.append(f"[{prefix}{name}]")
            section(ref["properties"], getattr(defaults, name), f"{prefix}{name}.")

    section(schema["properties"], cls(**{k: v for k, v in required.items() if "." not in k}), "")
    return "\n".join(lines).rstrip() + "\n"


def reference(cls: type) -> str:
    """A Markdown table of every field: the configuration reference in the docs."""
    from pydantic import TypeAdapter

    schema = TypeAdapter(cls).json_schema()
    rows = ["| key | default | what it is |", "|---|---|---|"]

    def walk(props: dict, required: list, prefix: str) -> None:
        for name, spec in props.items():
            if "$ref" in spec:
                sub = schema["$defs"][spec["$ref"].split("/")[-1]]
                walk(sub["properties"], sub.get("required", []), f"{prefix}{name}.")
                continue
            default = "(required)" if name in required else "not set" if spec.get("default") is None \
                else f"`{_toml_value(spec['default'])}`"
            rows.append(f"| `{prefix}{name}` | {default} | {' '.join(spec.get('description', '').split())} |")

    walk(schema["properties"], schema.get("required", []), "")
    return "\n".join(rows) + "\n"
