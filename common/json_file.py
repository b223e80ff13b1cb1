"""Reading a JSON file whose problems are the user's to fix: one error naming the file and what is wrong."""

from __future__ import annotations

import json
from pathlib import Path


def read_json(path: str | Path, error: type[Exception]) -> object:
    """The parsed document; ``error`` (a ValueError subclass) if the file cannot be read or is not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid JSON: {exc}") from None
