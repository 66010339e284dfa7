"""hf:// models: the real download code (huggingface_hub) against a fake of the hub's HTTP API on 127.0.0.1, the cache
in tmp_path; never the network. The fake serves the two endpoints a fetch uses: the repository's files with their
sizes (GET /api/models/OWNER/REPO/revision/REVISION?blobs=True) and a file (HEAD and GET
/OWNER/REPO/resolve/REVISION/PATH)."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from conftest import cli, official_with_rows

pytest.importorskip("huggingface_hub")

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "owner/repo"


class FakeHub:
    """One model repository at one commit ("main"); every request is recorded as (method, path)."""

    def __init__(self, files: dict[str, bytes], listed_sizes: dict[str, int] | None = None):
        self.files, self.listed_sizes, self.requests = files, listed_sizes or {}, []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                hub.answer(self, body=True)

            def do_HEAD(self):
                hub.answer(self, body=False)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        self.requests.append((h.command, path))
        api = path.startswith("/api/models/")
        parts = path.removeprefix("/api/models").strip("/").split("/", 4)
        if len(parts) < 4 or "/".join(parts[:2]) != REPO:
            return self.error(h, "RepoNotFound")
        if parts[2] != ("revision" if api else "resolve"):
            return self.error(h, "", 400)
        if parts[3] not in ("main", COMMIT):
            return self.error(h, "RevisionNotFound")
        if api:  # the repository's information with its files' sizes (?blobs=True)
            return self.send(h, json.dumps({"id": REPO, "sha": COMMIT, "siblings": [
                {"rfilename": name, "blobId": hashlib.sha1(data).hexdigest(),
                 "size": self.listed_sizes.get(name, len(data))} for name, data in self.files.items()]}).encode())
        name = parts[4] if len(parts) > 4 else ""
        if name not in self.files:
            return self.error(h, "EntryNotFound")
        data = self.files[name]
        self.send(h, data if body else b"", {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'},
                  length=len(data))

    def send(self, h: BaseHTTPRequestHandler, body: bytes, headers: dict | None = None, length: int | None = None):
        h.send_response(200)
        for k, v in (headers or {"Content-Type": "application/json"}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body) if length is None else length))
        h.end_headers()
        h.wfile.write(body)

    def error(self, h: BaseHTTPRequestHandler, code: str, status: int = 404) -> None:
        h.send_response(status)
        if code:
            h.send_header("X-Error-Code", code)
        h.send_header("X-Repo-Commit", COMMIT) if code == "EntryNotFound" else None
        h.send_header("Content-Length", "0")
        h.end_headers()

    def fetched(self) -> set[str]:
        """The repository files whose content was asked for (GET)."""
        return {p.split("/resolve/", 1)[1].split("/", 1)[1] for m, p in self.requests
                if m == "GET" and "/resolve/" in p}


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return official_with_rows(tmp_path / "run", rows=3)


@pytest.fixture
def hub(tmp_path, run_dir, monkeypatch):
    """The fake hub serving `run_dir` as owner/repo/run, beside an older step, a large file and another run that a
    fetch must leave alone; huggingface_hub pointed at it, its cache in tmp_path."""
    import huggingface_hub.constants as c

    files = {f"run/{f.name}": f.read_bytes() for f in run_dir.iterdir()}
    files.update({"run/step_0": b"older", "run/big.bin": b"x" * 100_000, "other/step_5": b"other run",
                  "README.md": b"# a model"})
    fake = FakeHub(files)
    cache = tmp_path / "hf" / "hub"
    for env, attr, value in [("HF_ENDPOINT", "ENDPOINT", fake.url), ("HF_HUB_CACHE", "HF_HUB_CACHE", str(cache)),
                             ("HF_HUB_OFFLINE", "HF_HUB_OFFLINE", False)]:
        monkeypatch.setenv(env, str(int(value)) if isinstance(value, bool) else value)
        monkeypatch.setattr(c, attr, value)  # the library read the environment when first imported
    monkeypatch.setattr(c, "HUGGINGFACE_CO_URL_TEMPLATE", fake.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    yield fake
    fake.stop()


def info_json(capsys, model: str) -> dict:
    code, out, err = cli(capsys, "info", model, "--json")
    assert code == 0, err
    return json.loads(out)


def without_source(info: dict) -> dict:
    return {k: v for k, v in info.items() if k != "source"}


def test_info_from_the_hub_equals_the_local_run_and_then_works_offline(capsys, hub, run_dir, monkeypatch):
    local = info_json(capsys, str(run_dir))
    fetched = info_json(capsys, f"hf://{REPO}/run")
    assert without_source(fetched) == without_source(local)
    assert f"models--owner--repo/snapshots/{COMMIT}/run/step_1" in fetched["source"]
    # only what a load reads: the highest step, its config and dataset.json, nothing else of the repository
    assert hub.fetched() == {"run/step_1", "run/all_config.yaml", "run/dataset.json"}

    hub.stop()
    import huggingface_hub.constants as c

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    assert info_json(capsys, f"hf://{REPO}/run") == fetched
    assert info_json(capsys, f"hf://{REPO}/run@main") == fetched


def test_no_network_and_nothing_cached_is_one_line(capsys, hub):
    hub.stop()  # nothing listens there now: a refused connection, as without a network
    code, out, err = cli(capsys, "info", f"hf://{REPO}/run")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "not in the cache and the hub is unreachable" in err


@pytest.mark.parametrize(("ref", "message"), [
    ("hf://owner/nope/run", "no such model repository owner/nope"),
    (f"hf://{REPO}/run@v9", "has no revision v9"),
    (f"hf://{REPO}/missing", "has no folder missing"),
    (f"hf://{REPO}", "no step_N checkpoint in owner/repo@main"),
    ("hf://owner", "not a hub reference"),
    ("hf://owner/repo/../x", "not a hub reference"),
    ("hf://owner/repo@", "not a hub reference"),
    ("hf://owner/repo/run@a b", "not a hub reference"),
])
def test_bad_references_are_one_line(capsys, hub, ref, message):
    code, out, err = cli(capsys, "info", ref)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and message in err, err
    assert hub.fetched() == set()


def test_a_file_over_the_budget_is_refused_before_its_download(capsys, hub):
    from trm_edge.hub import MAX_FILE_BYTES

    hub.listed_sizes["run/step_1"] = MAX_FILE_BYTES + 1
    code, out, err = cli(capsys, "info", f"hf://{REPO}/run")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "step_1 is 8.6 GB, over the 8 GiB" in err, err
    assert hub.fetched() == set()


def test_solve_reads_a_hub_model_as_its_model_argument(capsys, hub, run_dir):
    from conftest import TINY_PUZZLE

    fast = ["--halt", "fixed:1", "--views", "1"]
    want = cli(capsys, "solve", str(run_dir), TINY_PUZZLE, "--json", *fast)
    got = cli(capsys, "solve", f"hf://{REPO}/run", TINY_PUZZLE, "--json", *fast)
    assert want[0] == got[0] == 0, got[2]
    assert json.loads(got[1])["results"] == json.loads(want[1])["results"]
    assert json.loads(got[1])["model"].endswith(f"(hf://{REPO}/run@{COMMIT})")


@pytest.mark.parametrize(("absent", "extra"), [("huggingface_hub", "hub"), ("torch", "export")])
def test_a_missing_package_is_one_line_before_any_request(tmp_path, hub, absent, extra):
    """As on an install without the extra (test_runtime_only's import hook hides the package)."""
    import os
    import subprocess
    import sys

    from test_runtime_only import SITECUSTOMIZE

    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
               TRM_TEST_ABSENT=absent)
    res = subprocess.run([sys.executable, "-m", "trm_edge", "info", f"hf://{REPO}/run"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert f"needs {absent}: pip install 'trm-edge[{extra}]'" in res.stderr
    assert hub.requests == []


def test_an_exported_bundle_says_where_its_weights_came_from(capsys, hub, tmp_path):
    code, out, err = cli(capsys, "export", f"hf://{REPO}/run", "-o", str(tmp_path / "b"), "--graph", "step", "--json")
    assert code == 0, err
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["source"] == f"hf://{REPO}/run@{COMMIT}"
