"""hf:// models: the real download and upload code (huggingface_hub) against a fake of the hub's HTTP API on
127.0.0.1, the cache in tmp_path; never the network. The fake serves the two endpoints a fetch uses: the repository's
files with their sizes (GET /api/models/OWNER/REPO/revision/REVISION?blobs=True) and a file (HEAD and GET
/OWNER/REPO/resolve/REVISION/PATH); and those a push uses (POST): /api/repos/create, /api/validate-yaml (a root
README's front matter), /api/models/OWNER/REPO/preupload/REVISION and /api/models/OWNER/REPO/commit/REVISION."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from conftest import cli, copy_of, official_with_rows, tiny_config

pytest.importorskip("huggingface_hub")

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "owner/repo"


class FakeHub:
    """One model repository at one commit ("main"); every request is recorded as (method, path), every repository
    creation's payload in `created`, every commit as {"summary", "files": {path: bytes}} in `commits` (its files
    then served as the repository's). `refuse`: the HTTP status every POST gets instead."""

    def __init__(self, files: dict[str, bytes], listed_sizes: dict[str, int] | None = None):
        self.files, self.listed_sizes, self.requests = files, listed_sizes or {}, []
        self.created, self.commits, self.refuse = [], [], None
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                hub.answer(self, body=True)

            def do_HEAD(self):
                hub.answer(self, body=False)

            def do_POST(self):
                hub.receive(self)

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

    def receive(self, h: BaseHTTPRequestHandler) -> None:
        """A push's requests. The preupload check answers every file "regular", so its content comes base64 in the
        commit's NDJSON and no LFS protocol is needed."""
        path = unquote(urlsplit(h.path).path)
        self.requests.append((h.command, path))
        body = h.rfile.read(int(h.headers.get("Content-Length", 0)))
        if self.refuse:
            return self.error(h, "", self.refuse)
        if path == "/api/repos/create":
            self.created.append(json.loads(body))
            return self.send(h, json.dumps({"url": f"{self.url}/{REPO}"}).encode())
        if path == "/api/validate-yaml":
            return self.send(h, json.dumps({"errors": [], "warnings": []}).encode())
        kind = path.removeprefix(f"/api/models/{REPO}/").split("/")[0]
        if kind == "preupload":
            files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                     for f in json.loads(body)["files"]]
            return self.send(h, json.dumps({"files": files}).encode())
        if kind != "commit":
            return self.error(h, "", 400)
        lines = [json.loads(line) for line in body.splitlines()]
        added = {x["value"]["path"]: base64.b64decode(x["value"]["content"]) for x in lines if x["key"] == "file"}
        self.commits.append({"summary": lines[0]["value"]["summary"], "files": added})
        self.files.update(added)
        self.send(h, json.dumps({"commitUrl": f"{self.url}/{REPO}/commit/{COMMIT}", "commitOid": COMMIT}).encode())

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


# -- push --------------------------------------------------------------------------------------------

@pytest.fixture
def pushing(hub, monkeypatch):
    """The fake hub, written to with a dummy token (never the user's own, which a push would otherwise send)."""
    monkeypatch.setenv("HF_TOKEN", "hf_dummy")
    return hub


def pushed(capsys, *args: str) -> dict:
    code, out, err = cli(capsys, "push", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def bundle_files(bundle: Path) -> dict[str, bytes]:
    """What a push publishes: the files the manifest lists, and the manifest."""
    names = [*json.loads((bundle / "manifest.json").read_text())["files"], "manifest.json"]
    return {name: (bundle / name).read_bytes() for name in names}


def test_push_commits_the_bundle_and_its_card_into_a_folder(capsys, pushing, tiny_bundle, tmp_path):
    from huggingface_hub import hf_hub_download

    from trm_edge.bundle import Bundle

    bundle = copy_of(tiny_bundle, tmp_path)
    (bundle / "notes.txt").write_text("not the bundle's")  # in its folder, not in its manifest: never pushed
    res = pushed(capsys, str(bundle), f"hf://{REPO}/bundles/tiny")
    want = {f"bundles/tiny/{name}": data for name, data in bundle_files(bundle).items()}
    [commit] = pushing.commits
    card = commit["files"].pop("bundles/tiny/README.md").decode()
    assert commit["files"] == want  # exactly the bundle's files, byte for byte
    assert pushing.files["README.md"] == b"# a model"  # the repository's own card left alone
    assert res == {"url": f"{pushing.url}/{REPO}/commit/{COMMIT}", "commit": COMMIT, "repo": REPO,
                   "folder": "bundles/tiny", "files": len(want) + 1,
                   "bytes": sum(map(len, want.values())) + len(card.encode())}
    assert pushing.created == [{"name": "repo", "organization": "owner"}]  # the owner's default visibility
    assert card.startswith("---\nlibrary_name: trm-edge\ntags:\n- trm\n")
    assert "# A Tiny Recursive Model for sudoku" in card and "- sudoku\n" in card
    assert "license" not in card and "exported from" not in card  # neither known: the model was made in memory
    for name in ("step.onnx", "loop.onnx"):
        assert f"`{name}`" in card
    assert "- onnx: the step, loop graphs against the PyTorch reference on 4 puzzles" in card
    assert f"hf download {REPO} --include 'bundles/tiny/*' --local-dir DIR" in card
    assert "trm-edge solve DIR/bundles/tiny PUZZLE --backend ort" in card

    # what a user downloads back is the same bundle, and opens
    for name in want:
        hf_hub_download(REPO, name, local_dir=tmp_path / "dl")
    assert bundle_files(tmp_path / "dl" / "bundles" / "tiny") == bundle_files(bundle)
    Bundle(tmp_path / "dl" / "bundles" / "tiny")


def test_push_to_the_root_private_with_a_message(capsys, pushing, tiny_bundle):
    res = pushed(capsys, str(tiny_bundle), f"hf://{REPO}", "--private", "--message", "first bundle")
    [commit] = pushing.commits
    assert res["folder"] == "" and commit["summary"] == "first bundle"
    assert set(commit["files"]) == {*bundle_files(tiny_bundle), "README.md"}
    assert pushing.created == [{"name": "repo", "organization": "owner", "visibility": "private"}]
    assert ("POST", "/api/validate-yaml") in pushing.requests  # the hub checks a root card's front matter
    assert f"hf download {REPO} --local-dir DIR" in commit["files"]["README.md"].decode()


def test_the_card_gives_each_int8_route_s_guard_figures_and_its_command(tiny_bundle):
    """As an export with `--format litert --quantize litert:int8-dynamic` records them (export/guard.py)."""
    from trm_edge.api import bundle_summary
    from trm_edge.hub import model_card

    summary = bundle_summary(tiny_bundle)
    summary["graphs"].append(dict(summary["graphs"][0], format="litert", precision="int8-dynamic", file="step.tflite"))
    summary["quantization"]["litert int8-dynamic"] = {
        "route": "int8-dynamic", "heldout_puzzles": 512, "max_drop_pp": 1.0, "speed": {"speedup": 2.7},
        "guard": {"fp32_exact": 0.943359375, "int8_exact": 0.94921875, "exact_drop_pp": -0.5859375,
                  "decision_interval_pp": [-2.02, 0.68]}, "warnings": ["litert int8-dynamic: a warning"]}
    card = model_card(dict(summary, source=f"hf://{REPO}/run@{COMMIT}"), "me/models", "sudoku")
    assert "- onnx\n- sudoku\n- litert\n---\n" in card
    assert "| litert int8-dynamic | int8-dynamic | 512 | 94.3% → 94.9% | -0.59 | [-2.02, 0.68] | 1 | 2.70× |" in card
    assert "\n- litert int8-dynamic: a warning\n" in card
    assert f"| exported from | `hf://{REPO}/run@{COMMIT}` |" in card
    assert 'pip install "trm-edge[ort,litert,hub]"' in card
    assert "trm-edge solve DIR/sudoku PUZZLE --backend litert --precision int8-dynamic\n" in card


def test_the_card_names_the_family_and_hrms_two_stacks(tiny_bundle):
    from trm_edge.api import bundle_summary
    from trm_edge.hub import model_card

    summary = bundle_summary(tiny_bundle)
    card = model_card(summary)
    assert "| family | TRM (Tiny Recursive Model) |" in card and "| layers | 2, mixing tokens by an MLP" in card
    card = model_card(dict(summary, config=tiny_config(family="hrm", H_layers=3).to_dict()))
    assert card.startswith("---\nlibrary_name: trm-edge\ntags:\n- hrm\n- hierarchical-reasoning-model\n")
    assert "# A Hierarchical Reasoning Model for sudoku, exported by trm-edge" in card
    assert "| family | HRM (Hierarchical Reasoning Model) |" in card
    assert "| layers | 3 H + 2 L, mixing tokens by an MLP across the sequence |" in card


def test_an_edited_bundle_is_never_pushed(capsys, pushing, tiny_bundle, tmp_path):
    edited = copy_of(tiny_bundle, tmp_path)
    (edited / "init.npz").write_bytes((edited / "init.npz").read_bytes() + b"\0")
    code, out, err = cli(capsys, "push", str(edited), f"hf://{REPO}/b")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "does not match its sha256 in the manifest" in err
    assert pushing.requests == []


@pytest.mark.parametrize(("target", "message"), [
    ("owner/repo", "not a hub reference; push to hf://OWNER/REPO[/FOLDER]"),
    (f"hf://{REPO}/b@dev", "a push goes to the main branch; drop @dev"),
    ("hf://owner/a--b", "owner/a--b is not a valid repository name"),
])
def test_a_bad_target_is_one_line_before_any_request(capsys, pushing, tiny_bundle, target, message):
    code, out, err = cli(capsys, "push", str(tiny_bundle), target)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and message in err, err
    assert pushing.requests == []


def test_push_without_the_hub_extra_is_one_line(capsys, pushing, tiny_bundle, monkeypatch):
    import trm_edge.extras

    monkeypatch.setattr(trm_edge.extras, "installed", lambda module: module != "huggingface_hub")
    code, out, err = cli(capsys, "push", str(tiny_bundle), f"hf://{REPO}")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "needs huggingface_hub: pip install 'trm-edge[hub]'" in err
    assert pushing.requests == []


@pytest.mark.parametrize(("status", "message"), [
    (401, "did not accept your credentials (not logged in, or the token is invalid): log in with `hf auth login`, "
          "or set HF_TOKEN"),
    (403, "not allowed to write to owner/repo"),
])
def test_refused_credentials_are_one_line(capsys, pushing, tiny_bundle, status, message):
    pushing.refuse = status
    code, out, err = cli(capsys, "push", str(tiny_bundle), f"hf://{REPO}")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and message in err, err
    assert pushing.commits == []


def test_push_without_a_network_is_one_line(capsys, pushing, tiny_bundle):
    pushing.stop()
    code, out, err = cli(capsys, "push", str(tiny_bundle), f"hf://{REPO}")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "the hub is unreachable" in err
