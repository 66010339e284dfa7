"""`bench --remote` against hostile input: a URL that smuggles ssh options, a directory that is not a bundle (or a
tampered one), stray files beside a bundle, and ssh's multi-line errors. A fake `ssh` first on PATH records every
call, so nothing touches the network and each test can tell whether ssh was started at all."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

import pytest

from trm_edge.benchmarks.remote import RemoteTarget, run_remote
from trm_edge.bundle import MANIFEST
from trm_edge.cli import main
from trm_edge.errors import TRMEdgeError

FAKE_SSH = r"""
# Stands in for ssh: records argv and stdin of each call, and acts as a device with a shell and tar but no trm-edge.
import json, os, pathlib, sys
log = pathlib.Path(os.environ["FAKE_SSH_LOG"])
n = len(log.read_text().splitlines()) if log.exists() else 0
stdin = log.with_name(f"stdin-{n}")
stdin.write_bytes(sys.stdin.buffer.read())
with log.open("a") as f:
    f.write(json.dumps({"argv": sys.argv[1:], "stdin": str(stdin)}) + "\n")
command = sys.argv[-1]
if command == "mktemp -d":
    print("/tmp/trm-edge-scratch")
elif not command.startswith(("tar ", "rm ")):
    sys.exit("Warning: Permanently added 'device' (ED25519) to the list of known hosts.\n"
             "bash: line 1: trm-edge: command not found")
"""


@pytest.fixture
def ssh_calls(tmp_path, monkeypatch):
    """Puts the fake ssh first on PATH; returns a function listing its calls as (argv, bytes on stdin)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(f"#!{sys.executable}{FAKE_SSH}")
    (bin_dir / "ssh").chmod(0o755)
    log = tmp_path / "ssh-calls.jsonl"
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def calls() -> list[tuple[list[str], bytes]]:
        rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return [(r["argv"], Path(r["stdin"]).read_bytes()) for r in rows]
    return calls


def bench_cli(capsys, *args: str) -> tuple[int, list[str]]:
    """Exit code and stderr lines of `trm-edge bench ARGS`."""
    with pytest.raises(SystemExit) as e:
        main(["bench", *args])
    return e.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("url", [
    "ssh://-oProxyCommand=touch${IFS}x@host", "ssh://user@-oProxyCommand=x", "ssh://-oProxyCommand=x",
    "ssh://my host", "ssh://user@ho\x07st", "ssh://ho\nst", "ssh://us\ter@host", "ssh://a@b@host",
    "ssh://host:abc", "ssh://host:0", "ssh://host:65536", "ssh://host:", "ssh://[::1%25eth0]", "ssh://[-oX]",
])
def test_hostile_url_is_refused_before_ssh_starts(capsys, tmp_path, ssh_calls, tiny_bundle, url):
    code, err = bench_cli(capsys, str(tiny_bundle), f"--remote={url}", "--out", str(tmp_path / "out"))
    assert code == 2 and len(err) == 1 and err[0].startswith("trm-edge: error:"), err
    assert "ssh://[user@]host[:port]" in err[0]
    assert ssh_calls() == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("url, port, dest", [
    ("ssh://pi@raspberrypi.local:2222", ["-p", "2222"], "pi@raspberrypi.local"),
    ("ssh://my_pi", [], "my_pi"),
    ("ssh://root@[::1]:22", ["-p", "22"], "root@::1"),
])
def test_url_parts_never_become_ssh_options(tmp_path, ssh_calls, tiny_bundle, url, port, dest):
    with pytest.raises(TRMEdgeError):  # the fake device has no trm-edge
        run_remote(RemoteTarget(url, ["-i", "key"]), tiny_bundle, [], tmp_path / "out")
    calls = ssh_calls()
    assert [argv[-1].split()[0] for argv, _ in calls] == ["mktemp", "tar", "cd", "rm"]
    for argv, _ in calls:
        assert argv[:-1] == ["-i", "key", "-o", "BatchMode=yes", *port, "--", dest], argv


def test_a_folder_that_is_not_a_bundle_is_never_sent(capsys, tmp_path, ssh_calls):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".env").write_text("SECRET=1\n")
    code, err = bench_cli(capsys, str(home), "--remote=ssh://device", "--out", str(tmp_path / "out"))
    assert code == 2 and len(err) == 1 and "not a trm-edge bundle" in err[0], err
    assert ssh_calls() == []


def test_a_tampered_bundle_or_a_fifo_for_data_is_never_sent(tmp_path, ssh_calls, tiny_bundle):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "b")
    fifo = tmp_path / "puzzles.fifo"
    os.mkfifo(fifo)
    with pytest.raises(TRMEdgeError, match=r"is a FIFO \(named pipe\), not a data file"):
        run_remote(RemoteTarget("ssh://device"), bundle, [], tmp_path / "out", data=str(fifo))
    victim = bundle / next(iter(json.loads((bundle / MANIFEST).read_text())["files"]))
    victim.write_bytes(victim.read_bytes() + b"\0")
    with pytest.raises(TRMEdgeError, match="sha256"):
        run_remote(RemoteTarget("ssh://device"), bundle, [], tmp_path / "out")
    assert ssh_calls() == []


def test_only_the_manifest_and_its_files_travel(tmp_path, ssh_calls, tiny_bundle):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "b")
    (bundle / ".env").write_text("SECRET=1\n")
    data = tmp_path / "puzzles.csv"
    data.write_text("0" * 81 + "\n")
    with pytest.raises(TRMEdgeError):
        run_remote(RemoteTarget("ssh://device"), bundle, [], tmp_path / "out", data=str(data))
    (_, sent), = [(argv, stdin) for argv, stdin in ssh_calls() if stdin]
    with tarfile.open(fileobj=io.BytesIO(sent)) as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        assert len(got) == len(tar.getmembers())  # no directories, links or devices
    listed = [MANIFEST, *json.loads((bundle / MANIFEST).read_text())["files"]]
    assert got == {f"b/{f}": (bundle / f).read_bytes() for f in listed} | {"data-puzzles.csv": data.read_bytes()}


def test_an_ssh_failure_is_one_line(capsys, tmp_path, ssh_calls, tiny_bundle):
    with pytest.raises(TRMEdgeError) as e:
        run_remote(RemoteTarget("ssh://device"), tiny_bundle, [], tmp_path / "out")
    assert str(e.value) == "ssh://device: `trm-edge bench` failed (exit 1): bash: line 1: trm-edge: command not found"
    code, err = bench_cli(capsys, str(tiny_bundle), "--remote=ssh://device", "--out", str(tmp_path / "out"))
    assert code == 2 and len(err) == 2 and err[0].endswith("bench: running on ssh://device ...") and \
        err[1] == f"trm-edge: error: {e.value}", err  # the progress line (stderr is no terminal here), then the error
