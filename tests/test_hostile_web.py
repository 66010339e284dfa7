"""`trm-edge serve-web` facing what a network sends it: bad paths, dot-names, folders, visitors who leave mid-download,
and a SIGTERM from a service manager. It serves the site's files and nothing more, answers instead of printing
tracebacks, and leaves no temporary site behind."""

from __future__ import annotations

import http.client
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
from conftest import as_from_a_terminal, require_tool

from trm_edge.runtimes.browser import server

BIG = 64 << 20  # more than the loopback socket buffers hold, so that the server is still writing when the client goes


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A hand-made site (no build needed): pages, a folder without index.html, dot-names, and a file outside it."""
    root = tmp_path_factory.mktemp("hostile")
    (root / "outside.txt").write_text("outside the site")
    site = root / "site"
    files = {"index.html": "home page", "app/index.html": "app page", "sub/page.txt": "a page", ".secret": "secret",
             "sub/.hidden": "hidden", ".git/config": "[core]", ".trm-edge": "{}"}
    for name, text in files.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    with open(site / "big.bin", "wb") as f:
        f.truncate(BIG)
    return site


@pytest.fixture
def served(site):
    srv = server(site, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _get(srv, path: str, method: str = "GET") -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
    try:
        conn.request(method, path)
        res = conn.getresponse()
        return res.status, res.headers, res.read()
    finally:
        conn.close()


def test_bad_paths_get_an_answer_not_a_traceback(served, capfd):
    """A NUL or a lone surrogate in the path made open() raise ValueError: a traceback, and no answer at all."""
    for path in ("/%00", "/sub/%00.txt", "/index.html%00.png", "/%ED%A0%80"):
        status, _, _ = _get(served, path)
        assert status in (400, 404), path
    assert _get(served, "/")[0] == 200
    assert "Traceback" not in capfd.readouterr().err


def test_no_listings_no_dot_names_no_way_out(served):
    """A folder is served only through its index.html; no path segment starting with a dot (the .trm-edge marker,
    a .git) is served, however it is spelled; and nothing outside the site is reachable."""
    assert [_get(served, p)[::2] for p in ("/", "/app/", "/sub/page.txt")] == [
        (200, b"home page"), (200, b"app page"), (200, b"a page")]
    status, _, body = _get(served, "/sub/")
    assert status == 404 and b"page.txt" not in body
    for path in ("/.secret", "/sub/.hidden", "/.git/config", "/.git/", "/.trm-edge", "/%2esecret", "/sub%2f.hidden",
                 "//.secret", "/sub/%2Ehidden", "/.secret?x=1", "/x/../.secret"):
        assert _get(served, path)[0] == 404, path
        assert _get(served, path, "HEAD")[0] == 404, path
    for path in ("/../outside.txt", "/%2e%2e/outside.txt", "/..%2foutside.txt", "/sub/../../outside.txt",
                 "//../outside.txt", "/..\\outside.txt", "/%2e%2e%5coutside.txt", "/sub/%2e%2e/%2e%2e/outside.txt"):
        status, _, body = _get(served, path)
        assert status >= 400 and b"outside" not in body, path


def test_every_response_says_nosniff(served):
    """A browser must not guess a type other than the one sent (a stray file run as a script), on any answer."""
    for method, path, want in (("GET", "/index.html", 200), ("HEAD", "/index.html", 200), ("GET", "/app", 301),
                               ("GET", "/missing.js", 404), ("GET", "/%00", 400)):
        status, headers, _ = _get(served, path, method)
        assert status == want and headers["X-Content-Type-Options"] == "nosniff", (method, path, status)


def test_a_visitor_leaving_mid_download_is_not_a_traceback(served, capfd):
    """socketserver printed a traceback for every BrokenPipeError/ConnectionResetError: a phone that loses its
    signal mid-download filled the terminal."""
    failed = threading.Event()

    def handle_error(request, client_address) -> None:  # socketserver's hook for a request that raised
        type(served).handle_error(served, request, client_address)
        failed.set()

    served.handle_error = handle_error
    with socket.create_connection(("127.0.0.1", served.server_address[1]), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.0 200")
    assert failed.wait(10), "the server finished writing: make BIG larger"
    assert _get(served, "/")[0] == 200
    assert capfd.readouterr().err == ""


# -- the command ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def web_bundle(tiny_bundle):
    """A tiny sudoku bundle, with onnxruntime-web in the cache: the command builds a real site."""
    require_tool("npm", "fetches onnxruntime-web once")
    from trm_edge.runtimes.browser import ort_web

    ort_web()
    return tiny_bundle


def _read_until(proc: subprocess.Popen, text: bytes, timeout: float = 120) -> bytes:
    seen, deadline = b"", time.monotonic() + timeout
    while text not in seen:
        left = deadline - time.monotonic()
        assert left > 0 and proc.poll() is None, (seen, proc.poll())
        if select.select([proc.stdout], [], [], left)[0]:
            seen += os.read(proc.stdout.fileno(), 65536)
    return seen


def test_serve_web_removes_its_site_on_sigterm_and_ctrl_c(web_bundle, tmp_path):
    """SIGTERM's default action (systemd, docker stop, kill) skipped the TemporaryDirectory cleanup and left the
    site behind; now it stops as Ctrl-C does: promptly, one line, the site gone."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        tmp = tmp_path / sig.name
        tmp.mkdir()
        proc = subprocess.Popen([sys.executable, "-m", "trm_edge", "serve-web", str(web_bundle), "--port", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "TMPDIR": str(tmp)},
                                preexec_fn=as_from_a_terminal)
        try:
            _read_until(proc, b"serving")
            assert list(tmp.glob("trm-edge-site-*/site/index.html")), sig.name
            proc.send_signal(sig)
            stdout, stderr = proc.communicate(timeout=15)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == 0 and b"stopped" in stdout, (sig.name, proc.returncode, stdout, stderr)
        assert b"Traceback" not in stderr, (sig.name, stderr)
        assert not list(tmp.glob("trm-edge-site-*")), (sig.name, list(tmp.iterdir()))
