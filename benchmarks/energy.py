"""Energy meters: a real counter where the device has one, else a labelled estimate.

Every meter answers `read()` with cumulative joules since it was created, so the harness measures any
interval as a difference. Sources, in the order `auto` tries them:

- `rapl`: Intel/AMD RAPL through powercap sysfs, package domains only (subdomains such as core/uncore and
  the `psys` platform domain would double count). The counters wrap at `max_energy_range_uj`; a wrap between
  two reads is added back, so reads must come more often than one wrap period (minutes at full load).
  Package energy includes every process on the socket, hence the idle baseline.
- `pi5`: Raspberry Pi 5 PMIC rails from `vcgencmd pmic_read_adc`, power = sum of V x A over rails that have
  both readings (EXT5V has no current sensor, so USB and conversion losses are not counted). Sampled in a
  background thread and integrated (trapezoids).
- `android`: the battery fuel gauge, `current_now` x `voltage_now`, sampled and integrated. Makers disagree
  on units and sign, so: voltage is read as uV above 100000, mV above 1000, else V (a cell is 3-4.5 V);
  current is read as uA at or above 10000 in magnitude, else mA (10000 mA would be 10 A, which no phone
  draws; 10000 uA = 10 mA is below any phone running a benchmark); the sign is dropped since some gauges
  report discharge as negative and others as positive. While charging, the gauge sees the charger too, so
  the source says so.
- `estimate`: process CPU-seconds x a device power profile (W per busy core). Not a measurement: labelled
  `estimate` everywhere, and refused under CPU emulation (qemu-user), where CPU time says nothing about the
  device's power.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from trm_edge.errors import TRMEdgeError

POWERCAP = Path("/sys/class/powercap")
POWER_SUPPLY = Path("/sys/class/power_supply")
ANDROID_BATTERY = POWER_SUPPLY / "battery"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
METERS = ("rapl", "pi5", "android")
CHOICES = ("auto", "none", *METERS, "estimate")

# W per busy core above idle, per device class. Rough by nature: the point is an order of magnitude where no
# meter exists, and the version lets a report say which numbers it used.
POWER_PROFILES = {
    "version": 1,
    "profiles": {
        "x86-laptop": {"w_per_core": 5.0, "source": "mobile x86 (15-28 W package, 4-6 busy cores at all-core "
                                                    "turbo): ~5 W a core; RAPL package readings of such chips"},
        "x86-desktop": {"w_per_core": 10.0, "source": "desktop/server x86 (65-125 W package over 8-16 cores): "
                                                      "~10 W a core at all-core turbo"},
        "rpi5": {"w_per_core": 1.0, "source": "Raspberry Pi 5: ~2.7 W idle, ~6.8 W with 4 cores busy (stress-ng, "
                                              "published measurements): ~1 W a busy Cortex-A76"},
        "android-big-core": {"w_per_core": 2.0, "source": "Android big cores (Cortex-A7x/X at top frequency): "
                                                          "AOSP power_profile.xml cpu.core_power of several "
                                                          "hundred mA at ~3.8 V: ~1-3 W a core"},
    },
}


# -- parsers (pure, tested on recorded outputs) ------------------------------------------------------------

_PMIC_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(?:current|volt)\(\d+\)=\s*([-+0-9.eE]+)\s*[AV]\s*$")


def parse_pmic_adc(text: str) -> dict[str, tuple[float, float]]:
    """`vcgencmd pmic_read_adc` output -> {rail: (volts, amps)} for rails that report both."""
    amps, volts = {}, {}
    for line in text.splitlines():
        m = _PMIC_LINE.match(line)
        if m:
            (amps if m.group(2) == "A" else volts)[m.group(1)] = float(m.group(3))
    return {rail: (volts[rail], amps[rail]) for rail in sorted(amps.keys() & volts.keys())}


def pmic_power_w(text: str) -> float:
    rails = parse_pmic_adc(text)
    if not rails:
        raise TRMEdgeError("vcgencmd pmic_read_adc printed no rail with both volts and amps (a Pi 5 is needed)")
    return sum(v * a for v, a in rails.values())


def battery_power_w(current_now: str | float, voltage_now: str | float) -> float:
    """Battery power from raw sysfs values in whatever units the maker chose (see the module docstring)."""
    i, v = abs(float(current_now)), abs(float(voltage_now))
    volts = v / 1e6 if v > 1e5 else v / 1e3 if v > 1e3 else v
    amps = i / 1e6 if i >= 1e4 else i / 1e3
    return volts * amps


def rapl_packages(root: Path = POWERCAP) -> list[Path]:
    """Package-level domains: top-level `intel-rapl:N` zones named package-*."""
    zones = []
    for d in sorted(Path(root).glob("intel-rapl:*")):
        if d.name.count(":") != 1:
            continue
        try:
            name = (d / "name").read_text().strip()
        except OSError:
            continue
        if name.startswith("package"):
            zones.append(d)
    return zones


# -- emulation -----------------------------------------------------------------------------------------------

_QEMU_ARCH = {"aarch64": "aarch64", "arm64": "aarch64", "armv7l": "arm", "armv6l": "arm", "x86_64": "x86_64",
              "amd64": "x86_64", "i686": "i386", "riscv64": "riscv64", "ppc64le": "ppc64le", "s390x": "s390x"}


def _cpuinfo_arch(cpuinfo: str) -> str | None:
    if re.search(r"^flags\s*:", cpuinfo, re.M) or "GenuineIntel" in cpuinfo or "AuthenticAMD" in cpuinfo:
        return "x86"
    if re.search(r"^(Features|CPU implementer)\s*:", cpuinfo, re.M):
        return "arm"
    return None


def emulation_reason(*, env: dict | None = None, machine: str | None = None, cpuinfo: str | None = None,
                     binfmt: Path = BINFMT) -> str | None:
    """Why this interpreter looks emulated (qemu-user), or None. Facts are injectable for tests."""
    env = os.environ if env is None else env
    machine = (machine or platform.machine()).lower()
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    qemu_vars = sorted(k for k in env if k.startswith("QEMU_"))
    if qemu_vars:
        return f"qemu environment variables set ({', '.join(qemu_vars)})"
    host = _cpuinfo_arch(cpuinfo)
    ours = "x86" if machine in ("x86_64", "amd64", "i686", "i386") else "arm" if machine.startswith(
        ("aarch64", "arm")) else None
    if host and ours and host != ours:
        return f"the interpreter is {machine} but /proc/cpuinfo describes an {host} CPU"
    entry = Path(binfmt) / f"qemu-{_QEMU_ARCH.get(machine, machine)}"
    try:
        if entry.read_text().splitlines()[0].strip() == "enabled":
            return f"{entry} is enabled: {machine} programs run under qemu here"
    except (OSError, IndexError):
        pass
    return None


# -- meters ----------------------------------------------------------------------------------------------------

class Meter:
    """Cumulative joules since creation; `source` names where they come from."""

    source = "none"
    estimate = False

    def read(self) -> float:
        raise NotImplementedError

    def start(self) -> None:
        """Begin background sampling (meters that integrate power)."""

    def stop(self) -> None:
        pass

    def __enter__(self) -> Meter:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class RaplMeter(Meter):
    source = "rapl"

    def __init__(self, root: Path = POWERCAP):
        self.zones = rapl_packages(root)
        if not self.zones:
            raise TRMEdgeError(f"no RAPL package domain under {root}")
        try:
            self.max_uj = [int((z / "max_energy_range_uj").read_text()) for z in self.zones]
            self.last = self._raw()
        except PermissionError:
            raise TRMEdgeError(f"{self.zones[0]}/energy_uj is readable by root only: run as root or "
                               f"`sudo chmod a+r {root}/intel-rapl:*/energy_uj`") from None
        self.total_uj = 0

    def _raw(self) -> list[int]:
        return [int((z / "energy_uj").read_text()) for z in self.zones]

    def read(self) -> float:
        now = self._raw()
        for k, (a, b) in enumerate(zip(self.last, now)):
            self.total_uj += b - a if b >= a else b - a + self.max_uj[k]  # the counter wrapped once
        self.last = now
        return self.total_uj / 1e6


class SampledMeter(Meter):
    """Integrates a power reading over time; a background thread keeps sampling during long intervals."""

    def __init__(self, power_w: Callable[[], float], interval_s: float = 0.1,
                 clock: Callable[[], float] = time.monotonic):
        self.power_w, self.interval_s, self.clock = power_w, interval_s, clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.joules = 0.0
        self.samples = 0
        self._last = (self.clock(), self.power_w())

    def sample(self) -> float:
        with self._lock:
            t, p = self.clock(), self.power_w()
            t0, p0 = self._last
            self.joules += (t - t0) * (p + p0) / 2
            self._last = (t, p)
            self.samples += 1
            return self.joules

    def read(self) -> float:
        return self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=f"{self.source}-meter", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None


def _vcgencmd() -> str:
    return subprocess.run(["vcgencmd", "pmic_read_adc"], capture_output=True, text=True, timeout=5, check=True).stdout


class Pi5Meter(SampledMeter):
    source = "pi5"

    def __init__(self, read_adc: Callable[[], str] = _vcgencmd, **kw):
        if read_adc is _vcgencmd and not shutil.which("vcgencmd"):
            raise TRMEdgeError("vcgencmd not found (not a Raspberry Pi, or the firmware tools are not installed)")
        try:
            pmic_power_w(read_adc())
        except (OSError, subprocess.SubprocessError) as e:
            raise TRMEdgeError(f"vcgencmd pmic_read_adc failed: {e}") from None
        super().__init__(lambda: pmic_power_w(read_adc()), **kw)


class AndroidMeter(SampledMeter):
    source = "android"

    def __init__(self, root: Path = ANDROID_BATTERY, **kw):
        root = Path(root)
        cur, volt = root / "current_now", root / "voltage_now"
        try:
            battery_power_w(cur.read_text(), volt.read_text())
        except FileNotFoundError:
            raise TRMEdgeError(f"no battery gauge at {root} (current_now, voltage_now)") from None
        except PermissionError:
            raise TRMEdgeError(f"{cur} is not readable by this user") from None
        try:
            if (root / "status").read_text().strip().lower() == "charging":
                self.source = "android (charging: the gauge also sees the charger)"
        except OSError:
            pass
        super().__init__(lambda: battery_power_w(cur.read_text(), volt.read_text()), **kw)


def device_class(machine: str | None = None, env: dict | None = None,
                 model_file: Path = Path("/proc/device-tree/model"), power_supply: Path = POWER_SUPPLY) -> str:
    """The power profile a device falls under when nothing better is known: decided by the machine alone (an x86
    machine is a laptop when it has a battery, or when the OS cannot tell)."""
    env = os.environ if env is None else env
    machine = (machine or platform.machine()).lower()
    if "ANDROID_ROOT" in env or "ANDROID_DATA" in env:
        return "android-big-core"
    try:
        if "raspberry pi 5" in model_file.read_text(errors="replace").lower():
            return "rpi5"
    except OSError:
        pass
    if machine in ("x86_64", "amd64", "i686", "i386"):
        return "x86-desktop" if has_battery(power_supply) is False else "x86-laptop"
    return "android-big-core" if machine.startswith(("aarch64", "arm")) else "x86-laptop"


def has_battery(root: Path = POWER_SUPPLY) -> bool | None:
    """Whether the machine runs on a battery, read from the kernel's power_supply class (a keyboard's or mouse's
    battery, scope Device, does not count); None where the OS has no such directory. Read directly rather than
    through psutil, so that an optional package cannot change a machine's power profile."""
    try:
        supplies = list(Path(root).iterdir())
    except OSError:
        return None

    def read(d: Path, name: str) -> str:
        try:
            return (d / name).read_text(errors="replace").strip().lower()
        except OSError:
            return ""

    return any(read(d, "type") == "battery" and read(d, "scope") != "device" for d in supplies)


class EstimateMeter(Meter):
    """Process CPU-seconds x W per busy core: an estimate, never a measurement."""

    estimate = True

    def __init__(self, profile: str | None = None, *, emulated: Callable[[], str | None] = emulation_reason,
                 cpu_seconds: Callable[[], float] = time.process_time):
        reason = emulated()
        if reason:
            raise TRMEdgeError(f"energy estimate refused under emulation ({reason}): CPU time under qemu says "
                               "nothing about the device's power; use --energy none")
        profile = profile or device_class()
        if profile not in POWER_PROFILES["profiles"]:
            raise TRMEdgeError(f"unknown power profile {profile!r} (known: {', '.join(POWER_PROFILES['profiles'])})")
        self.profile = profile
        self.w_per_core = POWER_PROFILES["profiles"][profile]["w_per_core"]
        self.source = f"estimate:{profile} (profile v{POWER_PROFILES['version']}, CPU-seconds x W per core)"
        self.cpu_seconds = cpu_seconds
        self.t0 = cpu_seconds()

    def read(self) -> float:
        return (self.cpu_seconds() - self.t0) * self.w_per_core


def open_meter(kind: str = "auto", **kw) -> Meter | None:
    """The meter `--energy` names (None for `none`); `auto` takes the first real meter present, else the
    estimate, else None when even that is refused (emulation)."""
    kind, _, profile = kind.partition(":")
    if kind not in CHOICES:
        raise TRMEdgeError(f"--energy {kind!r}: use one of {', '.join(CHOICES)} (estimate:PROFILE picks a profile)")
    if kind == "none":
        return None
    if kind == "auto":
        for name in METERS:
            try:
                return _METER_CLASSES[name]()
            except TRMEdgeError:
                continue
        try:
            return EstimateMeter(**kw)
        except TRMEdgeError:
            return None
    if kind == "estimate":
        return EstimateMeter(profile or None, **kw)
    return _METER_CLASSES[kind]()


_METER_CLASSES: dict[str, Callable[[], Meter]] = {"rapl": RaplMeter, "pi5": Pi5Meter, "android": AndroidMeter}


def meters_status() -> list[dict]:
    """Which meters this machine has, with the reason for each it has not."""
    rows = []
    for name in METERS:
        try:
            m = _METER_CLASSES[name]()
            m.read()
            rows.append({"meter": name, "present": True, "reason": None})
        except (TRMEdgeError, OSError, ValueError) as e:
            rows.append({"meter": name, "present": False, "reason": str(e)})
    reason = emulation_reason()
    rows.append({"meter": "estimate", "present": reason is None,
                 "reason": f"refused under emulation: {reason}" if reason else f"profile {device_class()} "
                                                                               "(an estimate, not a measurement)"})
    return rows


def idle_power_w(meter: Meter, seconds: float) -> float | None:
    """Mean power while this process sleeps, subtracted from runs; None when not measured."""
    if seconds <= 0:
        return None
    e0, t0 = meter.read(), time.perf_counter()
    time.sleep(seconds)
    return (meter.read() - e0) / (time.perf_counter() - t0)
