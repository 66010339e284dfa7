"""What a benchmark ran on: the facts that explain its numbers (int8 speed hangs on VNNI/AMX or dotprod/i8mm)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

# Distribution names, read from metadata so that doctor never pays for (or crashes on) importing a runtime.
RUNTIMES = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "openvino", "ai-edge-litert", "tflite-runtime",
            "torch")
X86_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
ARM_FEATURES = ("asimd", "asimddp", "i8mm", "bf16", "sve", "sve2", "fphp", "asimdhp")


def runtime_versions() -> dict[str, str | None]:
    versions = {}
    for dist in RUNTIMES:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def cpu_info(cpuinfo: str | None = None) -> dict:
    """CPU model and the ISA features that matter for int8/bf16 kernels, from /proc/cpuinfo text."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, val = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), val.strip())
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    wanted = X86_FEATURES if "flags" in fields else ARM_FEATURES
    model = fields.get("model name") or fields.get("hardware") or fields.get("model") or platform.processor()
    if not model and "cpu part" in fields:
        model = f"ARM implementer {fields.get('cpu implementer')} part {fields['cpu part']}"
    return {"model": model or "unknown", "features": {f: f in flags for f in wanted}}


def _device_model() -> str | None:
    for f in (Path("/proc/device-tree/model"), Path("/sys/firmware/devicetree/base/model")):
        try:
            return f.read_text(errors="replace").strip("\x00\n ")
        except OSError:
            continue
    return None


# Words a CPU's model name carries that say nothing about it: marks, clocks, core counts and graphics.
_CPU_NOISE = re.compile(r"\((?:R|TM)\)|\bCPU\b|\bProcessor\b|\b\d+-Core\b|@.*$|\s(?:w/|with)\s.*$", re.I)


def machine_label(arch: str, cpu_model: str, cores: int | None, device: str | None = None) -> str:
    """What titles and `compare` call a machine: what it is, not its host name (often "vm" or "localhost", and
    private), e.g. "x86_64 · AMD EPYC 9B14 · 2 CPUs" or "aarch64 · Raspberry Pi 5 Model B Rev 1.0 · 4 CPUs"."""
    name = device or re.sub(r"\s+", " ", _CPU_NOISE.sub(" ", cpu_model)).strip()
    parts = [arch, "" if name == "unknown" else name, f"{cores} CPU{'s' * (cores != 1)}" if cores else ""]
    return " · ".join(p for p in parts if p) or "unknown machine"


def machine_facts() -> dict:
    cpu, device, arch, cores = cpu_info(), _device_model(), platform.machine(), os.cpu_count()
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        physical = None
    return {
        "label": machine_label(arch, cpu["model"], cores, device),
        "device": device,
        "cpu_model": re.sub(r"\s+", " ", cpu["model"]),
        "cpu_features": [f for f, on in cpu["features"].items() if on],
        "arch": arch,
        "logical_cores": cores,
        "physical_cores": physical,
        "os": platform.platform(),
        "python": platform.python_version(),
        "runtimes": {k: v for k, v in runtime_versions().items() if v},
    }


def machine_key(engines: Sequence[str] = RUNTIMES) -> str:
    """What a measurement of this machine's speed depends on: its CPU (model, ISA features, cores) and the versions
    of the engines that ran it. A cached figure under another key is stale (a new engine, a moved disk image)."""
    cpu = cpu_info()
    versions = runtime_versions()
    facts = [platform.machine(), cpu["model"], sorted(f for f, on in cpu["features"].items() if on), os.cpu_count(),
             {e: versions.get(e) for e in engines}]
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:16]


def doctor(refresh: bool = False) -> dict:
    """Runtimes, CPU features and energy meters this machine offers trm-edge, its measured matrix-multiply peak
    (cached; `refresh` measures again) and the routes `trm-edge tune` chose here."""
    from trm_edge.benchmarks.energy import emulation_reason, meters_status
    from trm_edge.benchmarks.peak import peak
    from trm_edge.benchmarks.tune import remembered
    from trm_edge.runtimes import platform_problem
    from trm_edge.tasks import registered

    cpu, versions = cpu_info(), runtime_versions()
    engines = ("onnxruntime", "openvino", "ai-edge-litert", "tflite-runtime")
    problem = platform_problem() or (None if any(versions[e] for e in engines) else
                                     "no inference engine installed: pip install 'trm-edge[ort]' (or [openvino], "
                                     "[litert])")
    return {"runtimes": versions, "arch": platform.machine(), "device": _device_model(), "cpu_model": cpu["model"],
            "cpu_features": cpu["features"], "emulation": emulation_reason(), "energy_meters": meters_status(),
            "peak": None if problem else peak(refresh), "tuned": remembered(), "tasks": registered(),
            "problems": [problem] if problem else []}

