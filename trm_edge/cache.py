"""The user's cache (`$XDG_CACHE_HOME/trm-edge`, else `~/.cache/trm-edge`): what this machine measured about itself
(its matrix-multiply peak, the fastest route of each tuned bundle) and the web page's engine.

A cache entry is only ever a saving: one that is missing, unreadable, malformed or for another machine reads as
absent, and one that cannot be written (a read-only home) is skipped, so no command fails for its cache.
Entries are small JSON files, written whole (a private temporary file renamed into place, then given the umask's
permissions).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from trm_edge.atomic import umask
from trm_edge.errors import TRMEdgeError
from trm_edge.untrusted import load_json

MAX_ENTRY = 1 << 20  # bytes: an entry is a few KB of figures


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "trm-edge"


def read_entry(name: str) -> dict | None:
    """The JSON object cached under `name` (e.g. "peak.json", "tune/<hash>.json"), or None."""
    try:
        doc = load_json(cache_dir() / name, "cache entry", MAX_ENTRY)
    except (TRMEdgeError, OSError):
        return None
    return doc if isinstance(doc, dict) else None


def write_entry(name: str, doc: dict[str, Any]) -> Path | None:
    """Write `doc` under `name` whole; None where the cache cannot be written."""
    path = cache_dir() / name
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
        return path
    except OSError:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        return None
