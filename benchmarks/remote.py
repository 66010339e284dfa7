"""Benchmark on another device over ssh, with the device's own trm-edge: ship the bundle (a tar stream, so the
device needs only ssh and tar), run `bench` there, fetch report.json, and render it here (the device may lack
matplotlib). The remote scratch directory is removed afterwards.

The URL and the bundle are checked here before ssh first starts: no part of the URL can reach ssh as an option
(`ssh://-oProxyCommand=...@host`), and only a verified bundle's listed files travel, never a whole directory."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from trm_edge.atomic import claim
from trm_edge.benchmarks.report import validate_report, write_report
from trm_edge.bundle import MANIFEST, Bundle
from trm_edge.errors import TRMEdgeError
from trm_edge.untrusted import check_regular

_URL = re.compile(r"ssh://(?:(?P<user>[^@/]*)@)?(?P<host>\[[^\]/]*\]|[^:/]*)(?::(?P<port>[^/]*))?/?")
_USER = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*")  # POSIX portable user names
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # host names, IPv4 addresses and ~/.ssh/config aliases


def parse_ssh_url(url: str) -> tuple[str | None, str, int | None]:
    """ssh://[user@]host[:port] -> (user, host, port); an IPv6 address comes in brackets and leaves without them.
    Each part must be a user name, a host name or address, or a port 1-65535: nothing else reaches ssh."""
    usage = "expected ssh://[user@]host[:port], e.g. ssh://pi@raspberrypi.local:2222"
    m = _URL.fullmatch(url)
    if not m or not m["host"]:
        raise TRMEdgeError(f"--remote {url!r}: {usage}")
    user, host, port = m["user"], m["host"], m["port"]
    if user is not None and not _USER.fullmatch(user):
        raise TRMEdgeError(f"--remote: {user!r} is not a user name (letters, digits, '_', '.', '-', not first '-'); "
                           f"{usage}")
    if host.startswith("["):
        host = _ipv6(host[1:-1], usage)
    elif not _HOST.fullmatch(host):
        raise TRMEdgeError(f"--remote: {host!r} is not a host name (letters, digits, '_', '.', '-', not first '-'); "
                           f"{usage}")
    if port is not None and not (re.fullmatch(r"[0-9]{1,5}", port) and 1 <= int(port) <= 65535):
        raise TRMEdgeError(f"--remote: port {port!r} is not a number 1-65535; {usage}")
    return user, host, int(port) if port else None


def _ipv6(text: str, usage: str) -> str:
    """A zone id (`%eth0`) may hold any character, so scoped addresses are refused with the rest."""
    try:
        ip = ipaddress.IPv6Address(text)
    except ValueError:
        ip = None
    if ip is None or ip.scope_id:
        raise TRMEdgeError(f"--remote: {text!r} is not an IPv6 address without a zone; {usage}")
    return str(ip)


def _last_line(text: str) -> str:
    """ssh and the device's trm-edge end with the line that says what went wrong; an error stays one line."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:500] if lines else "no message"


@dataclass(frozen=True)
class RemoteTarget:
    """The device a remote bench runs on: ssh://[user@]host[:port], extra ssh options (given first, so they win),
    the device's trm-edge command and the seconds its bench may take (None: no limit)."""
    url: str
    ssh_options: Sequence[str] = ()
    command: str = "trm-edge"
    timeout: float | None = None


class _Ssh:
    def __init__(self, url: str, options: Sequence[str]):
        user, host, port = parse_ssh_url(url)
        if not shutil.which("ssh"):
            raise TRMEdgeError("ssh not found: install an OpenSSH client (Debian: openssh-client)")
        # Options given first win (ssh keeps the first value of each); BatchMode never waits on a password prompt.
        # `--` ends ssh's options: the destination and the command are never read as one.
        self.base = ["ssh", *options, "-o", "BatchMode=yes", *(["-p", str(port)] if port else []), "--",
                     f"{user}@{host}" if user else host]
        self.url = url

    def _failed(self, what: str, code: int, output: str) -> TRMEdgeError:
        hint = "; check that plain `ssh` to the device works (a key: --ssh-opts '-i KEY')" if code == 255 else ""
        return TRMEdgeError(f"{self.url}: {what} failed (exit {code}): {_last_line(output)}{hint}")

    def run(self, command: str, what: str, timeout: float | None = None) -> str:
        try:
            res = subprocess.run([*self.base, command], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                 timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TRMEdgeError(f"{self.url}: {what} timed out after {timeout:g} s") from None
        if res.returncode != 0:
            raise self._failed(what, res.returncode, res.stderr or res.stdout)
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
            raise self._failed("copying the bundle", proc.returncode, err)


def _bundle_members(path: str | os.PathLike) -> tuple[str, dict[str, Path]]:
    """(name, archive name -> local file): a verified bundle's manifest.json and the files it lists, nothing else
    (a stray .env beside them stays here). Links are resolved, so the device receives contents."""
    bundle = Bundle(path)  # refuses a directory that is not a bundle, or one whose files fail their hashes
    name = Path(os.path.abspath(path)).name
    files = {MANIFEST: (bundle.path / MANIFEST).resolve(), **{f: bundle.file(f) for f in bundle.manifest["files"]}}
    return name, {f"{name}/{rel}": full for rel, full in files.items()}


def run_remote(target: RemoteTarget, bundle: str | os.PathLike, bench_args: Sequence[str] = (),
               out_dir: str | os.PathLike = "bench-report", data: str | None = None,
               announce: Callable[[str], None] | None = None) -> dict:
    """Run `COMMAND bench BUNDLE BENCH_ARGS --out DIR` on the target device; a local `data` file travels along.
    Everything is checked before ssh first starts; `announce` then hears the line to show the user.
    Returns the fetched report, also written (with report.md and plots) to `out_dir`."""
    ssh = _Ssh(target.url, target.ssh_options)
    name, members = _bundle_members(bundle)
    args = list(bench_args)
    if data and data != "builtin":
        check_regular(data, "data file")
        sent = f"data-{Path(data).name}"
        members[sent] = Path(data).resolve()
        args += ["--data", sent]
    elif data:
        args += ["--data", data]
    claim(out_dir, "report")
    if announce:
        announce(f"running on {target.url} ...")
    tmp = ssh.run("mktemp -d", "creating a scratch directory", timeout=60).strip()
    if not re.fullmatch(r"/[\w./-]+", tmp):
        raise TRMEdgeError(f"{target.url}: mktemp -d printed {tmp!r}, not a directory")
    q = shlex.quote
    try:
        ssh.send_tar(tmp, members)
        ssh.run(f"cd {q(tmp)} && {target.command} bench {q(name)} {' '.join(q(a) for a in args)} --out out",
                f"`{target.command} bench`", timeout=target.timeout)
        text = ssh.run(f"cat {q(tmp)}/out/report.json", "fetching report.json", timeout=120)
    finally:
        try:
            ssh.run(f"rm -rf {q(tmp)}", "removing the scratch directory", timeout=60)
        except TRMEdgeError:
            pass
    try:
        report = json.loads(text)
    except json.JSONDecodeError as e:
        raise TRMEdgeError(f"{target.url}: report.json is not JSON ({e})") from None
    validate_report(report)
    write_report(report, out_dir)
    return report
