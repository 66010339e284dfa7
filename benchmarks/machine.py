"""What a benchmark ran on: the facts that explain its numbers (int8 speed hangs on VNNI/AMX or dotprod/i8mm)."""

from __future__ import annotations

import os
import platform
import re
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


def machine_facts() -> dict:
    cpu = cpu_info()
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        physical = None
    return {
        "label": platform.node() or "unknown",
        "device": _device_model(),
        "cpu_model": re.sub(r"\s+", " ", cpu["model"]),
        "cpu_features": [f for f, on in cpu["features"].items() if on],
        "arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "os": platform.platform(),
        "python": platform.python_version(),
        "runtimes": {k: v for k, v in runtime_versions().items() if v},
    }


def doctor() -> dict:
    """Runtimes, CPU features and energy meters this machine offers trm-edge."""
    from trm_edge.benchmarks.energy import emulation_reason, meters_status
    from trm_edge.runtimes import platform_problem

    cpu, versions = cpu_info(), runtime_versions()
    engines = ("onnxruntime", "openvino", "ai-edge-litert", "tflite-runtime")
    problem = platform_problem() or (None if any(versions[e] for e in engines) else
                                     "no inference engine installed: pip install 'trm-edge[ort]' (or [openvino], "
                                     "[litert])")
    return {"runtimes": versions, "arch": platform.machine(), "device": _device_model(), "cpu_model": cpu["model"],
            "cpu_features": cpu["features"], "emulation": emulation_reason(), "energy_meters": meters_status(),
            "problems": [problem] if problem else []}
