"""Configuration files: one TOML file per app, checked by pydantic, with environment overrides.

The settings themselves are plain dataclasses (``DeviceSettings``, ``EdgeSettings``) so the
device core needs no pydantic; this module is what a service uses to fill them. Order of
precedence: defaults < the file < ``ANS_DEVICE_*`` / ``ANS_EDGE_*`` variables < command-line
flags. Nested keys use ``__`` in variables: ``ANS_DEVICE_MQTT__BROKER=mqtt://hub:1883``.
Unknown keys, in the file or in a variable, are errors: a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
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
                  environ: dict[str, str] | None = None) -> T:
    """``cls`` filled from the TOML file at ``path`` (optional), the environment and ``overrides``."""
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
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the configuration: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    doc = _merge(_merge(doc, env), flags)
    try:
        return TypeAdapter(cls).validate_python(doc)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
                             for err in exc.errors())
        raise ConfigError(f"{source} (with {env_prefix}* variables): {problems}") from None


def _build(cls: type[T], doc: dict) -> T:
    hints = typing.get_type_hints(cls)
    return cls(**{k: _build(hints[k], v) if isinstance(v, dict) and dataclasses.is_dataclass(hints.get(k)) else v
                  for k, v in doc.items()})


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def example(cls: type, required: dict[str, Any]) -> str:
    """A commented TOML file with every field of ``cls``, its documentation and its default."""
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
            if field.name in required:
                lines.append(f"{field.name} = {_toml_value(required[field.name])}")
            elif value is None:
                lines.append(f"# {field.name} =   (not set)")
            else:
                lines.append(f"{field.name} = {_toml_value(value)}")
            lines.append("")
        for name, spec in nested:
            ref = schema["$defs"][spec["$ref"].split("/")[-1]]
            lines.append(f"[{prefix}{name}]")
            section(ref["properties"], getattr(defaults, name), f"{prefix}{name}.")

    section(schema["properties"], cls(**required), "")
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
            default = "(required)" if name in required else f"`{_toml_value(spec.get('default'))}`".replace(
                "`None`", "not set")
            rows.append(f"| `{prefix}{name}` | {default} | {' '.join(spec.get('description', '').split())} |")

    walk(schema["properties"], schema.get("required", []), "")
    return "\n".join(rows) + "\n"
