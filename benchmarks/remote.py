"""Benchmark on another device over ssh, with the device's own trm-edge: ship the bundle (a tar stream, so the
device needs only ssh and tar), run `bench` there, fetch report.json, and render it here (the device may lack
matplotlib). The remote scratch directory is removed afterwards."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from trm_edge.atomic import claim
from trm_edge.benchmarks.report import validate_report, write_report
from trm_edge.errors import TRMEdgeError


def parse_ssh_url(url: str) -> tuple[str | None, str, int | None]:
    """ssh://[user@]host[:port] -> (user, host, port)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme != "ssh" or not parts.hostname or port == -1 or parts.path not in ("", "/"):
        raise TRMEdgeError(f"--remote {url!r}: expected ssh://user@host[:port]")
    return parts.username, parts.hostname, port


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join((text or "").strip().splitlines()[-lines:])


class _Ssh:
    def __init__(self, url: str, options: Sequence[str]):
        if not shutil.which("ssh"):
            raise TRMEdgeError("ssh not found: install an OpenSSH client (Debian: openssh-client)")
        user, host, port = parse_ssh_url(url)
        # Options given first win (ssh keeps the first value of each); BatchMode never waits on a password prompt.
        self.base = ["ssh", *options, "-o", "BatchMode=yes", *(["-p", str(port)] if port else []),
                     f"{user}@{host}" if user else host]
        self.url = url

    def run(self, command: str, what: str, timeout: float | None = None) -> str:
        try:
            res = subprocess.run([*self.base, command], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                 timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TRMEdgeError(f"{self.url}: {what} timed out after {timeout:g} s") from None
        if res.returncode != 0:
            raise TRMEdgeError(f"{self.url}: {what} failed (exit {res.returncode}):\n{_tail(res.stderr or res.stdout)}")
        return res.stdout

    def send_tar(self, dest: str, members: dict[str, Path]) -> None:
        """Stream `members` (name in the archive -> local path) into `dest` on the device."""
        proc = subprocess.Popen([*self.base, f"tar -C {shlex.quote(dest)} -xf -"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            with tarfile.open(fileobj=proc.stdin, mode="w|") as tar:
                for name, path in members.items():
                    tar.add(path, arcname=name)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise TRMEdgeError(f"{self.url}: copying the bundle failed (exit {proc.returncode}):\n{_tail(err)}")


def run_remote(ssh_url: str, bundle: str | os.PathLike, bench_args: Sequence[str] = (),
               out_dir: str | os.PathLike = "bench-report", ssh_options: Sequence[str] = (),
               remote_command: str = "trm-edge", data: str | None = None, timeout: float | None = None) -> dict:
    """Run `REMOTE_COMMAND bench BUNDLE BENCH_ARGS --out DIR` on the device; a local `data` file travels along.
    Returns the fetched report, also written (with report.md and plots) to `out_dir`."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise TRMEdgeError(f"{bundle}: no such bundle directory")
    claim(out_dir, "report")
    ssh = _Ssh(ssh_url, ssh_options)
    members = {bundle.name: bundle}
    args = list(bench_args)
    if data and data != "builtin":
        if not Path(data).is_file():
            raise TRMEdgeError(f"{data}: no such data file")
        name = f"data-{Path(data).name}"
        members[name] = Path(data)
        args += ["--data", name]
    elif data:
        args += ["--data", data]
    tmp = ssh.run("mktemp -d", "creating a scratch directory", timeout=60).strip()
    if not re.fullmatch(r"/[\w./-]+", tmp):
        raise TRMEdgeError(f"{ssh_url}: mktemp -d printed {tmp!r}, not a directory")
    q = shlex.quote
    try:
        ssh.send_tar(tmp, members)
        ssh.run(f"cd {q(tmp)} && {remote_command} bench {q(bundle.name)} "
                f"{' '.join(q(a) for a in args)} --out out", f"`{remote_command} bench`", timeout=timeout)
        text = ssh.run(f"cat {q(tmp)}/out/report.json", "fetching report.json", timeout=120)
    finally:
        try:
            ssh.run(f"rm -rf {q(tmp)}", "removing the scratch directory", timeout=60)
        except TRMEdgeError:
            pass
    try:
        report = json.loads(text)
    except json.JSONDecodeError as e:
        raise TRMEdgeError(f"{ssh_url}: report.json is not JSON ({e})") from None
    validate_report(report)
    write_report(report, out_dir)
    return report
