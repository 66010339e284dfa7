"""The artifact: a directory of graphs + `manifest.json` that says what they are and proves it.

A bundle is written atomically (whole or not at all) and checked on load: every file's sha256 must match
the manifest, and no path may leave the directory. Torch-free: this is what a device opens.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from trm_edge.atomic import atomic_dir
from trm_edge.config import TRMConfig
from trm_edge.errors import TRMEdgeError

MANIFEST = "manifest.json"
FORMAT, FORMAT_VERSION = "trm-edge-bundle", 1


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_bundle(out_dir: str | os.PathLike, manifest: dict[str, Any], write_files) -> Path:
    """`write_files(tmp)` writes the payload into a temporary directory; the manifest (with every file's
    hash) is added last and the directory renamed into place."""

    def write(tmp: Path) -> None:
        write_files(tmp)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        doc = dict(manifest, format=FORMAT, format_version=FORMAT_VERSION,
                   files={p.relative_to(tmp).as_posix(): {"sha256": sha256(p), "bytes": p.stat().st_size}
                          for p in files})
        (tmp / MANIFEST).write_text(json.dumps(doc, indent=2))

    return atomic_dir(out_dir, write, "bundle")


class Bundle:
    """A loaded, verified bundle."""

    def __init__(self, path: str | os.PathLike, verify: bool = True):
        self.path = Path(path)
        mf = self.path / MANIFEST
        if not mf.is_file():
            raise TRMEdgeError(f"{self.path}: not a trm-edge bundle (no {MANIFEST}); create one with trm-edge export")
        try:
            self.manifest = json.loads(mf.read_text())
        except (OSError, ValueError) as e:
            raise TRMEdgeError(f"{mf}: unreadable manifest ({e})") from None
        if self.manifest.get("format") != FORMAT:
            raise TRMEdgeError(f"{mf}: not a trm-edge bundle manifest")
        if self.manifest.get("format_version", 0) > FORMAT_VERSION:
            raise TRMEdgeError(f"{mf}: bundle format {self.manifest['format_version']} is newer than this trm-edge "
                               f"reads ({FORMAT_VERSION}); upgrade trm-edge")
        for name in self.manifest.get("files", {}):
            self.file(name)  # path check
        if verify:
            self.verify()
        self.config = TRMConfig.from_dict(self.manifest["config"])
        self.task: str = self.manifest["task"]

    def file(self, name: str) -> Path:
        """A payload path, refused if it leaves the bundle directory or is not listed in the manifest."""
        p = Path(name)
        root = self.path.resolve()
        full = (root / p).resolve()
        if p.is_absolute() or ".." in p.parts or root not in full.parents:
            raise TRMEdgeError(f"{self.path}: manifest path {name!r} leaves the bundle directory; refused")
        if name not in self.manifest.get("files", {}):
            raise TRMEdgeError(f"{self.path}: {name} is not listed in the manifest")
        return full

    def verify(self) -> None:
        for name, info in self.manifest["files"].items():
            f = self.file(name)
            if not f.is_file():
                raise TRMEdgeError(f"{f}: missing from the bundle; re-export it")
            if f.stat().st_size != info["bytes"] or sha256(f) != info["sha256"]:
                raise TRMEdgeError(f"{f}: does not match its sha256 in the manifest (modified or corrupt); re-export "
                                   "the bundle")

    def graph_file(self, graph: str, precision: str = "fp32") -> Path:
        forms = self.manifest.get("graphs", {})
        if graph not in forms:
            raise TRMEdgeError(f"{self.path}: no {graph} graph in this bundle (has: {', '.join(forms) or 'none'}); "
                               f"re-export with --graph {graph}")
        if precision not in forms[graph]["files"]:
            have = ", ".join(forms[graph]["files"])
            raise TRMEdgeError(f"{self.path}: no {precision} {graph} graph (has: {have}); export with --quantize")
        return self.file(forms[graph]["files"][precision])
