"""The solver as a static web site: the page in runtimes/web/, the bundle's step graph and its device contract, and
onnxruntime-web's WASM build, vendored at build time so that nothing is fetched from a CDN when the page runs.

onnxruntime-web comes from npm once (`npm pack`, its sha512 checked against the pinned one) into a cache, or from a
tarball the user already has (`--ort-web`). Torch-free.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
from functools import partial
from http import HTTPStatus
from pathlib import Path

from trm_edge.atomic import atomic_dir, claim
from trm_edge.bundle import Bundle
from trm_edge.cache import cache_dir
from trm_edge.errors import TRMEdgeError
from trm_edge.runtimes.device import CONTRACT, check_task, device_contract

PAGE = Path(__file__).parent / "web"
PAGE_FILES = ("index.html", "app.js", "trm.js", "style.css")
ORT_WEB = "onnxruntime-web@1.30.0"
ORT_WEB_SHA512 = "q0y+JrrtukXSzsBWEMccVfqX25LRmosXHF+CaRJmg8pZClzcV7svNc4rKY3jL02Vb7QmRMDs1SigqR4CXAfKYQ=="
ORT_WEB_FILES = ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm")  # the WASM build, glue bundled in
# Cross-origin isolation lets the page use WASM threads; static hosts that read a _headers file (Netlify,
# Cloudflare Pages) apply these, and `trm-edge serve-web` sends them itself.
ISOLATION = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
             "Cross-Origin-Resource-Policy": "same-origin"}
NOSNIFF = {"X-Content-Type-Options": "nosniff"}  # a file is only ever what its type says
_TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
          ".onnx": "application/octet-stream"}


def _cache() -> Path:
    return cache_dir() / ORT_WEB.replace("@", "-")


def _npm_pack(dest: Path) -> Path:
    npm = shutil.which("npm")
    if not npm:
        raise TRMEdgeError(f"building a web site needs {ORT_WEB} from npm once: install Node.js (npm), or pass "
                           f"--ort-web FILE.tgz made elsewhere with `npm pack {ORT_WEB}`")
    res = subprocess.run([npm, "pack", ORT_WEB, "--silent", "--pack-destination", str(dest)], capture_output=True,
                         text=True, timeout=600)
    tgz = sorted(dest.glob("onnxruntime-web-*.tgz"))
    if res.returncode or not tgz:
        raise TRMEdgeError(f"npm pack {ORT_WEB} failed ({(res.stderr or res.stdout).strip()[-200:]}); or pass "
                           "--ort-web FILE.tgz")
    return tgz[0]


def _unpack(tgz: Path, dest: Path) -> None:
    """Check the tarball against the pinned sha512 (npm's integrity), then take out only the files the page loads."""
    data = tgz.read_bytes()
    if base64.b64encode(hashlib.sha512(data).digest()).decode() != ORT_WEB_SHA512:
        raise TRMEdgeError(f"{tgz}: not the {ORT_WEB} tarball (sha512 differs from the pinned one); get it with "
                           f"`npm pack {ORT_WEB}`")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for name in ORT_WEB_FILES:
            (dest / name).write_bytes(tar.extractfile(f"package/dist/{name}").read())


def ort_web(source: str | os.PathLike | None = None) -> Path:
    """A folder holding ORT_WEB_FILES: from `source` (a tarball of `npm pack`; the caller removes the folder), else
    the cache, filled by npm once. The cache appears whole (staged beside it, then renamed) or not at all."""
    if source is not None:
        tgz = Path(source)
        if not tgz.is_file():
            raise TRMEdgeError(f"--ort-web {tgz}: no such file; make it with `npm pack {ORT_WEB}`")
        tmp = Path(tempfile.mkdtemp(prefix="trm-edge-ortweb-"))
        try:
            _unpack(tgz, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return tmp
    cache = _cache()
    if cache.is_dir():
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=".staged-", dir=cache.parent))
    try:
        with tempfile.TemporaryDirectory() as work:
            _unpack(_npm_pack(Path(work)), staged)
        os.replace(staged, cache)
    except OSError:
        if not cache.is_dir():  # else another build filled it first: use that one
            raise
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return cache


def build_site(bundle: str | os.PathLike, out: str | os.PathLike, precision: str = "fp32",
               ort_web_source: str | os.PathLike | None = None) -> Path:
    """Write the site: the page, the step graph of `precision`, its contract and onnxruntime-web, all or nothing."""
    claim(out, "web-site")  # before fetching anything
    b = Bundle(bundle)
    check_task(b, "the web page")
    graph = b.graph_file("step", precision)
    if b.graph_bytes("step", precision) != graph.stat().st_size:
        raise TRMEdgeError(f"{graph}: keeps its weights in separate files, which the page does not load; export "
                           "the model without external data")
    vendor = ort_web(ort_web_source)

    def write(tmp: Path) -> None:
        for name in PAGE_FILES:
            shutil.copyfile(PAGE / name, tmp / name)
        (tmp / "vendor").mkdir()
        for name in ORT_WEB_FILES:
            shutil.copyfile(vendor / name, tmp / "vendor" / name)
        shutil.copyfile(graph, tmp / graph.name)
        (tmp / CONTRACT).write_text(json.dumps(device_contract(b, tmp / graph.name, precision)))
        (tmp / "_headers").write_text("/*\n" + "".join(f"  {k}: {v}\n" for k, v in {**ISOLATION, **NOSNIFF}.items()))

    try:
        return atomic_dir(out, write, "web-site")
    finally:
        if ort_web_source is not None:
            shutil.rmtree(vendor, ignore_errors=True)


CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright's own browser download is not needed
# Quiet in a closed network: no component updates, sync or background fetches (each would be refused).
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic")


class _Handler(http.server.SimpleHTTPRequestHandler):
    """The site's files and nothing more: no folder listings, no dot-names (the .trm-edge marker, a .git beside the
    page), and a 400 rather than a traceback for a name no file can have (NUL, a lone surrogate)."""
    isolate = True

    def end_headers(self) -> None:
        if self.isolate:
            for k, v in ISOLATION.items():
                self.send_header(k, v)
        self.send_header("Cache-Control", "no-cache")
        for k, v in NOSNIFF.items():
            self.send_header(k, v)
        super().end_headers()

    def send_head(self) -> io.BufferedReader | None:
        raw = self.path.split("?", 1)[0].split("#", 1)[0]  # as translate_path reads it
        if any(word.startswith(".") for word in re.split(r"[/\\]", urllib.parse.unquote(raw))):
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        try:
            return super().send_head()
        except ValueError:  # raised by open() before any response is sent
            self.send_error(HTTPStatus.BAD_REQUEST, "Bad path")
            return None

    def list_directory(self, path) -> None:
        """A folder without index.html is not a page: 404, not a list of what the site holds."""
        self.send_error(HTTPStatus.NOT_FOUND, "File not found")

    def guess_type(self, path) -> str:
        return _TYPES.get(Path(str(path)).suffix, None) or super().guess_type(path)

    def log_message(self, *args) -> None:  # the command prints its own one line; requests are noise
        pass


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """A visitor who leaves mid-download is no error; anything else is one line, not socketserver's traceback."""
        e = sys.exc_info()[1]
        if not isinstance(e, ConnectionError):
            print(f"trm-edge: a request from {client_address[0]} failed ({type(e).__name__}: {e})", file=sys.stderr)


def server(site: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, isolate: bool = True
           ) -> http.server.ThreadingHTTPServer:
    """An HTTP server for a built site: with `isolate`, the COOP/COEP headers that let WASM use threads; without,
    what any plain static host gives (the page then runs single-threaded)."""
    handler = type("Handler", (_Handler,), {"isolate": isolate})
    try:
        return _Server((host, port), partial(handler, directory=str(site)))
    except OSError as e:
        raise TRMEdgeError(f"cannot serve on {host}:{port} ({e.strerror or e}); choose another --port") from None
