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
from trm_edge.halting import MAX_STEPS
from trm_edge.onnxscan import Malformed, external_locations, unexported
from trm_edge.tasks.arc_rows import TaskRows
from trm_edge.tasks.base import Codec
from trm_edge.untrusted import check_regular, parse_json, read_limited

MANIFEST = "manifest.json"
FORMAT, FORMAT_VERSION = "trm-edge-bundle", 1
_MAX_MANIFEST = 16 << 20  # bytes; ours are a few kB


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
    """A loaded, verified bundle. Downloaded bundles are untrusted, and a hostile author rewrites the manifest's
    hashes too: so every path is checked on its own (inside the directory, no link out, no hard link, every graph's
    external data listed), the manifest's structure is checked before use, and nothing outside is ever read."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        mf = self.path / MANIFEST
        if not self.path.exists():
            raise TRMEdgeError(f"{self.path}: no such bundle directory")
        if not mf.exists():
            raise TRMEdgeError(f"{self.path}: not a trm-edge bundle (no {MANIFEST}); create one with trm-edge export")
        self._inside(MANIFEST)
        raw = read_limited(mf, _MAX_MANIFEST, "trm-edge bundle manifest")
        self.digest = hashlib.sha256(raw).hexdigest()  # names this export: the manifest holds every file's sha256
        self.manifest = parse_json(raw, mf, "trm-edge bundle manifest")
        try:
            self.config, self.task = self._check_manifest()
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise TRMEdgeError(f"{mf}: malformed manifest ({type(e).__name__}: {str(e)[:100]}); re-export the "
                               "bundle") from None
        for name in self.manifest["files"]:
            self.file(name)  # path and link checks before anything is read
        self.verify()

    def _check_manifest(self) -> tuple[TRMConfig, str]:
        m = self.manifest
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise TRMEdgeError(f"{self.path / MANIFEST}: not a trm-edge bundle manifest")
        version = m.get("format_version")
        if version != FORMAT_VERSION:
            what = "newer than this trm-edge reads; upgrade trm-edge" if isinstance(version, int) and \
                version > FORMAT_VERSION else "not one this trm-edge knows; re-export the bundle"
            raise TRMEdgeError(f"{self.path / MANIFEST}: bundle format version {version!r} is {what}")
        if not isinstance(m["files"], dict) or not all(
                isinstance(k, str) and isinstance(v["sha256"], str) and isinstance(v["bytes"], int)
                for k, v in m["files"].items()):
            raise TypeError("files must map names to {sha256, bytes}")
        if not isinstance(m["graphs"], dict) or not all(
                isinstance(f, str) for g in m["graphs"].values() for f in g["files"].values()):
            raise TypeError("graphs must map forms to {files: {precision: name}}")
        if not isinstance(m.get("formats", {}), dict) or not all(
                isinstance(f, str) for fmt in m.get("formats", {}).values() for g in fmt["graphs"].values()
                for f in g.values()):
            raise TypeError("formats must map names to {graphs: {form: {precision: name}}}")
        for key in ("init", "reference", "task"):
            if not isinstance(m[key], str):
                raise TypeError(f"{key} must be a string")
        try:
            return TRMConfig.from_dict(m["config"]), m["task"]
        except TRMEdgeError as e:
            raise ValueError(str(e)) from None

    def _inside(self, name: str) -> Path:
        """The resolved path of `name`, refused if it leaves the directory or is a hard link (which may share its
        data with a file anywhere)."""
        p = Path(name)
        root = self.path.resolve()
        full = (root / p).resolve()
        if p.is_absolute() or ".." in p.parts or root not in full.parents:
            raise TRMEdgeError(f"{self.path}: path {name!r} leaves the bundle directory; refused")
        if full.is_file() and full.stat().st_nlink > 1:
            raise TRMEdgeError(f"{self.path}: {name} is a hard link ({full.stat().st_nlink} names); refused: copy "
                               "the bundle with `cp -r` instead of linking it")
        return full

    def file(self, name: str) -> Path:
        """A payload path, refused if it is not listed in the manifest or fails the path checks."""
        if name not in self.manifest.get("files", {}):
            raise TRMEdgeError(f"{self.path}: {name} is not listed in the manifest")
        return self._inside(name)

    def _check_graph(self, name: str, f: Path, graph: bytes) -> None:
        """A graph runs only if it is one trm-edge exports (its ops, a Loop bounded by the step cap and without scan
        outputs: a hostile one would otherwise be met at run time, as a hang or gigabytes), and its tensors may
        point only at listed files of the bundle."""
        try:
            found = external_locations(graph)
            why = unexported(graph, MAX_STEPS)
        except Malformed as e:
            raise TRMEdgeError(f"{f}: not a valid ONNX graph ({e}); re-export the bundle") from None
        if why:
            raise TRMEdgeError(f"{f}: {why}; refused (re-export the bundle)")
        for loc in sorted(found):
            rel = (Path(name).parent / loc).as_posix()
            self._inside(rel)
            if rel not in self.manifest["files"]:
                raise TRMEdgeError(f"{f}: external data {loc!r} is not a file listed in the manifest; refused")

    def verify(self) -> None:
        """Every listed file there with its size and sha256; an ONNX graph, read once for its hash, also has its
        structure and external-data references checked."""
        for name, info in self.manifest["files"].items():
            f = self.file(name)
            if not f.exists():
                raise TRMEdgeError(f"{f}: missing from the bundle; re-export it")
            check_regular(f, "bundle file")  # a FIFO or a device is never read
            bad = TRMEdgeError(f"{f}: does not match its sha256 in the manifest (modified or corrupt); re-export "
                               "the bundle")
            if f.stat().st_size != info["bytes"]:
                raise bad
            graph = f.read_bytes() if name.endswith(".onnx") else None
            if (sha256(f) if graph is None else hashlib.sha256(graph).hexdigest()) != info["sha256"]:
                raise bad
            if graph is not None:
                self._check_graph(name, f, graph)

    @property
    def arc_rows(self) -> TaskRows | None:
        """What names the puzzle rows of an ARC bundle exported with --tasks (None: rows by number only)."""
        doc = self.manifest.get("arc_rows")
        return None if doc is None else TaskRows.from_manifest(doc, self.config.num_puzzle_identifiers)

    @property
    def codec(self) -> Codec:
        """The bundle's task (a plugin's, or generic: tokens as they are) for its model's shape."""
        from trm_edge.tasks import codec_for

        return codec_for(self.task, self.config.vocab_size, self.config.seq_len, self.path)

    @property
    def halting(self) -> str:
        """The halting policy the bundle recommends (older bundles carry none: the official fixed steps)."""
        return str(self.manifest.get("halting", "fixed"))

    def sections(self) -> dict[str, dict]:
        """format -> its part of the manifest (graphs, verification, quantization); ONNX's is the manifest's top
        level."""
        return {"onnx": self.manifest, **self.manifest.get("formats", {})}

    def formats(self) -> dict[str, dict[str, dict[str, str]]]:
        """format -> graph form -> precision -> file; ONNX's files sit in the manifest's top-level `graphs`."""
        return {"onnx": {g: info["files"] for g, info in self.manifest["graphs"].items()},
                **{name: f["graphs"] for name, f in self.manifest.get("formats", {}).items()}}

    def graph_bytes(self, graph: str, precision: str = "fp32", fmt: str = "onnx") -> int:
        """A graph's size with the files it reads beside it (an IR's .bin, an ONNX graph's external data)."""
        name = Path(self.formats()[fmt][graph][precision])
        companions = [name, name.with_suffix(".bin"), name.with_name(f"{name.name}.data")]
        return sum(self.manifest["files"][c.as_posix()]["bytes"] for c in companions
                   if c.as_posix() in self.manifest["files"])

    def graph_file(self, graph: str, precision: str = "fp32", fmt: str = "onnx") -> Path:
        formats = self.formats()
        if fmt not in formats:
            raise TRMEdgeError(f"{self.path}: no {fmt} graphs in this bundle (has: {', '.join(formats)}); re-export "
                               f"with --format {fmt}")
        forms, what = formats[fmt], "" if fmt == "onnx" else f"{fmt} "
        if graph not in forms:
            raise TRMEdgeError(f"{self.path}: no {what}{graph} graph in this bundle (has: {', '.join(forms) or 'none'})"
                               + (f"; re-export with --graph {graph}" if graph not in self.manifest["graphs"] else ""))
        if precision not in forms[graph]:
            raise TRMEdgeError(f"{self.path}: no {precision} {what}{graph} graph (has: {', '.join(forms[graph])}); "
                               "export with --quantize")
        return self.file(forms[graph][precision])
