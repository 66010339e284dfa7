"""Benchmark reports: the schema-checked JSON, the Markdown table a person reads, the plots, and `compare`,
which joins reports from several machines. Plot code imports matplotlib lazily (devices may lack it)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from trm_edge.atomic import atomic_dir, claim
from trm_edge.errors import TRMEdgeError
from trm_edge.extras import installed, missing_error
from trm_edge.untrusted import load_json

SCHEMA_PATH = Path(__file__).with_name("report.schema.json")
PLOTS = ("pareto.png", "steps_histogram.png", "latency_by_backend.png")


# -- schema --------------------------------------------------------------------------------------------------

def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _is(value, kind: str) -> bool:
    if kind in ("integer", "number"):
        return not isinstance(value, bool) and isinstance(value, int if kind == "integer" else (int, float))
    return isinstance(value, _TYPES[kind])


def _errors(value, schema: dict, root: dict, path: str) -> list[str]:
    """The subset of JSON Schema the report schema uses, for devices without the jsonschema package."""
    if "$ref" in schema:
        node = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        return _errors(value, node, root, path)
    if "anyOf" in schema and all(_errors(value, s, root, path) for s in schema["anyOf"]):
        return [f"{path}: {value!r} matches none of the allowed forms"]
    if "const" in schema and value != schema["const"]:
        return [f"{path}: expected {schema['const']!r}, got {value!r}"]
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is(value, k) for k in kinds):
            return [f"{path}: expected {' or '.join(kinds)}, got {type(value).__name__}"]
    errs = []
    if _is(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            errs.append(f"{path}: {value} is below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errs.append(f"{path}: {value} is above the maximum {schema['maximum']}")
    if isinstance(value, dict):
        errs += [f"{path}: missing {k!r}" for k in schema.get("required", []) if k not in value]
        props, extra = schema.get("properties", {}), schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                errs += _errors(v, props[k], root, f"{path}.{k}")
            elif extra is False:
                errs.append(f"{path}: unexpected {k!r}")
            elif isinstance(extra, dict):
                errs += _errors(v, extra, root, f"{path}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            errs += _errors(v, schema["items"], root, f"{path}[{i}]")
    return errs


def schema_errors(report: dict, use_jsonschema: bool = True) -> list[str]:
    """Every way `report` (as JSON would read it back) breaks the schema; jsonschema is used when installed."""
    doc, schema = json.loads(json.dumps(report)), load_schema()
    if use_jsonschema:
        try:
            import jsonschema
        except ImportError:
            pass
        else:
            return [f"$.{'.'.join(map(str, e.absolute_path))}: {e.message}"
                    for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]
    return _errors(doc, schema, schema, "$")


def validate_report(report: dict) -> dict:
    errs = schema_errors(report)
    if errs:
        more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
        raise TRMEdgeError(f"not a trm-edge benchmark report (schema v1): {errs[0]}{more}")
    return report


def load_report(path: str | os.PathLike) -> dict:
    """A report.json, or a directory holding one, checked against the schema."""
    p = Path(path)
    p = p / "report.json" if p.is_dir() else p
    report = load_json(p, "trm-edge benchmark report")
    try:
        return validate_report(report)
    except TRMEdgeError as e:
        raise TRMEdgeError(f"{p}: {e}") from None


# -- tables --------------------------------------------------------------------------------------------------

def run_label(run: dict, depth: bool = False) -> str:
    label = f"{run['backend']}/{run['precision']}/{run['graph']} {_halt(run, depth)}"
    return f"{label} @{run['machine']}" if run.get("machine") else label


def _halt(run: dict, depth: bool = False) -> str:
    """The policy as a person writes it (min=1 is the default), with the views when there are several and the
    depth (H,L cycles) when asked."""
    text = run["halt"].replace(",min=1", "")
    text = f"{text} x{run['views']}" if run.get("views", 1) > 1 else text
    return f"{text} d{run['depth']}" if depth and run.get("depth") else text


def _varies(runs: Sequence[dict], key: str) -> bool:
    return len({r.get(key) for r in runs}) > 1


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x, digits: int = 3) -> str:
    """`digits` significant digits, whole numbers from 10**digits up to a million: a table cell reads 1024, not
    1.02e+03."""
    if x is None:
        return "-"
    return f"{x:.0f}" if 10 ** digits <= abs(x) < 1e6 else f"{x:.{digits}g}"


def _share(run: dict) -> str:
    """The share of this machine's measured matrix-multiply peak the run reached (runs before peaks: -)."""
    share = run.get("peak_share")
    return "-" if share is None else f"{100 * share:.0f}%" if share >= 0.1 else f"{100 * share:.1f}%"


def _energy(run: dict) -> str:
    if run["energy_j_per_solve"] is None:
        return "-"
    return f"{_num(run['energy_j_per_solve'])} ({'estimate' if run['energy_estimated'] else run['energy_source']})"


def table(runs: Sequence[dict], compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """Headers and cells shared by the Markdown report and (compact, for a terminal) the CLI's table. "= ref" is
    `agreement_with_fp32`: the share of puzzles a run answers exactly as its bundle's fp32 reference run does (the
    step graph with every supervision step, on torch where installed), which the report's text or title names."""
    machine, depth = any(r.get("machine") for r in runs), _varies(runs, "depth")
    if compact:
        # 80 columns: names wrap between words, numbers are single words (2 significant digits) that never wrap;
        # the machine goes into the run's cell (a column more would not fit) and puzzles/s is left to report.md
        # (a solve's latency is already its batch's time over its size)
        return ["run", "halt", "exact", "= ref", "steps", "ms p50/p90", "peak", "J/solve"], [[
            f"{r['backend']} {r['precision']} {r['graph']}" + (f" @ {r['machine']}" if machine else ""),
            _halt(r, depth).replace(",", " "),
            _pct(r["exact_accuracy"]), _pct(r["agreement_with_fp32"]),
            f"{r.get('mean_view_steps', r['mean_steps']):.2f}",
            f"{_num(r['latency_ms']['p50'], 2)}/{_num(r['latency_ms']['p90'], 2)}", _share(r),
            "-" if r["energy_j_per_solve"] is None else f"{'~' if r['energy_estimated'] else ''}"
                                                         f"{_num(r['energy_j_per_solve'], 2)}"] for r in runs]
    headers = (["machine"] if machine else []) + [
        "backend", "precision", "graph", "halt", "threads", "batch", "n", "exact", "token acc", "= ref",
        "mean steps", "ms/solve p50/p90/p99", "ms/step p50", "puzzles/s", "GFLOP/s (of peak)", "init ms", "graph MB",
        "peak RSS MB", "J/solve (source)"]
    rows = []
    for r in runs:
        lat = r["latency_ms"]
        rows.append(([r["machine"]] if machine else []) + [
            r["backend"], r["precision"], r["graph"], _halt(r, depth), str(r["threads"] or "default"), str(r["batch"]),
            str(r["n"]), _pct(r["exact_accuracy"]), _pct(r["token_accuracy"]), _pct(r["agreement_with_fp32"]),
            f"{r['mean_steps']:.2f}", f"{_num(lat['p50'])}/{_num(lat['p90'])}/{_num(lat['p99'])}",
            _num(r["latency_per_step_ms"]["p50"]), _num(r["throughput_per_s"]),
            f"{_num(r.get('gflop_per_s'))} ({_share(r)})", _num(r["init_ms"]),
            _num(r.get("graph_mb")), _num(r["peak_rss_mb"]), _energy(r)])
    return headers, rows


def _markdown_table(runs: Sequence[dict]) -> str:
    headers, rows = table(runs)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_line(m: dict) -> str:
    feats = ", ".join(m["cpu_features"]) or "none of note"
    runtimes = ", ".join(f"{k} {v}" for k, v in m["runtimes"].items()) or "none"
    device = f"{m['device']}, " if m.get("device") else ""
    return (f"**{m['label']}**: {device}{m['cpu_model']} ({m['arch']}; {feats}), {m['logical_cores']} logical cores, "
            f"{m['os']}, Python {m['python']}; runtimes: {runtimes}")


def reference_note(report: dict) -> str:
    """What the "= ref" column compares with: each bundle's fp32 reference run, named, with its exact-solve rate."""
    refs = report.get("references") or [report["reference"]]
    named = "; ".join(" ".join(r[k] for k in ("backend", "precision", "graph", "halt"))
                      + (f" on `{r['bundle']}`" if len(refs) > 1 else "") + f", exact {_pct(r['exact_accuracy'])}"
                      + (f" (fallback: {r['fallback_from']})" if r.get("fallback_from") else "") for r in refs)
    return (f"Reference: {named}. \"= ref\": the share of puzzles a run answers exactly as its bundle's reference "
            "does (an fp32 run with the reference's engine, graph and policy is compared with itself).")


def _energy_note(e: dict) -> str:
    if e["source"] == "none":
        return "Energy: not measured."
    head = f"Energy: ESTIMATE, not a measurement: {e['source']}" if e["estimate"] else f"Energy: {e['source']}"
    if e["idle_power_w"] is None:
        return f"{head}; no idle baseline (J/solve is raw)."
    return (f"{head}; idle baseline {e['idle_power_w']:.3g} W over {e['idle_seconds']:g} s, subtracted in J/solve "
            "(raw values in report.json).")


def plots_skipped() -> str | None:
    """Why reports get no plots here (a device's runtime-only install has no matplotlib), or None: known before a
    benchmark runs, so that the report is written without them instead of failing at the end."""
    return None if installed("matplotlib") else f"plots skipped: {missing_error('drawing them', 'matplotlib', 'bench')}"


def _images() -> str:
    return plots_skipped() or "\n".join(f"![{p[:-4]}]({p})" for p in PLOTS)


def render_markdown(report: dict) -> str:
    data = report["data"]
    lines = [
        "# trm-edge benchmark", "",
        f"Machine: {machine_line(report['machine'])}", "",
        f"Bundle: `{report['bundle']}` ({report['bundle_mb']:.2f} MB). Data: {data['source']}, {data['n']} puzzles "
        f"({data['labelled']} with a label, the rest checked by the task's rules). Created {report['created']}.", "",
        reference_note(report), "",
        _energy_note(report["energy"]), "",
        _markdown_table(report["runs"]), "",
    ]
    if report["skipped"]:
        lines += ["Skipped:", *(f"- {s['backend']}/{s['precision']}/{s['graph']}: {s['reason']}"
                                for s in report["skipped"]), ""]
    return "\n".join([*lines, _images(), ""])


# -- plots ---------------------------------------------------------------------------------------------------

def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both lower x (latency) and higher y (accuracy), by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -float("inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global backend state, works headless

    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)  # a renderer, so that label boxes can be measured before saving
    return fig


def place_labels(ax, points: Sequence[tuple[float, float]], texts: Sequence[str], fontsize: float = 7) -> list:
    """Annotate each point with its text at the first of several offsets around it whose box overlaps no label
    placed before it (nor the point markers), else at the least crowded one; returns the annotations."""
    fig = ax.figure
    fig.canvas.draw()  # the axes' final limits and transforms
    renderer = fig.canvas.get_renderer()
    marks = [ax.transData.transform(p) for p in points]
    offsets = [(d * dx, d * dy) for d in (6, 14, 24) for dx, dy in
               ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))]
    placed, out = [], []
    for (x, y), text in zip(points, texts):
        best = None
        for dx, dy in offsets:
            a = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                            ha="left" if dx >= 0 else "right", va="bottom" if dy >= 0 else "top")
            box = a.get_window_extent(renderer).expanded(1.1, 1.2)
            hits = sum(box.overlaps(b) for b in placed) + sum(box.contains(*m) for m in marks)
            if best is None or hits < best[0]:
                if best is not None:
                    best[1].remove()
                best = (hits, a, box)
            else:
                a.remove()
            if hits == 0:
                break
        placed.append(best[2])
        out.append(best[1])
    return out


def plot_pareto(runs: Sequence[dict], path: Path) -> None:
    """Latency against accuracy, one numbered point per run (colour: backend, shape: views), the frontier in
    red, and a key of what each number ran: halting, views and, where they differ, the depth."""
    depth = _varies(runs, "depth")
    fig = _figure(11, 5.5)
    ax = fig.add_axes((0.07, 0.1, 0.55, 0.82))
    # the mean, not the median: with views and halting the cost sits in the tail (most puzzles verify at view 0)
    pts = [(r["latency_ms"]["mean"], r["exact_accuracy"]) for r in runs]
    backends = list(dict.fromkeys(r["backend"] for r in runs))
    views = sorted({r.get("views", 1) for r in runs})
    shapes = "os^Dvp*h"
    for b in backends:
        for v in views:
            mine = [p for p, r in zip(pts, runs) if r["backend"] == b and r.get("views", 1) == v]
            if mine:
                ax.scatter([x for x, _ in mine], [y for _, y in mine], zorder=3, color=f"C{backends.index(b)}",
                           marker=shapes[views.index(v) % len(shapes)],
                           label=b if len(views) == 1 else f"{b}, {v} view{'s' * (v > 1)}")
    front = [pts[i] for i in pareto_front(pts)]
    ax.plot([x for x, _ in front], [y for _, y in front], drawstyle="steps-post", color="tab:red", marker="o",
            markerfacecolor="none", markersize=11, label="Pareto frontier", zorder=2)
    if len(pts) > 1 and max(x for x, _ in pts) > 20 * max(min(x for x, _ in pts), 1e-9):
        ax.set_xscale("log")
    ax.margins(x=0.15, y=0.12)
    ax.set(xlabel="time per solve, mean (ms)", ylabel="exact-solve rate", title="time vs accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=7)
    place_labels(ax, pts, [str(k) for k in range(1, len(runs) + 1)])
    key = [f"{k:>2}  {run_label(r, depth)}" + (f", {_share(r)} of peak" if r.get("peak_share") is not None else "")
           for k, r in enumerate(runs, 1)]
    fig.text(0.65, 0.92, "\n".join(key), va="top", ha="left", fontsize=max(5.0, min(8.0, 300 / max(len(key), 1))),
             family="monospace")
    fig.savefig(path)


def plot_steps(runs: Sequence[dict], path: Path) -> None:
    halts = list(dict.fromkeys(r["halt"] for r in runs))
    fig = _figure(8, 2.6 * len(halts) + 0.5)
    for k, halt in enumerate(halts):
        ax = fig.add_subplot(len(halts), 1, k + 1)
        group = [r for r in runs if r["halt"] == halt]
        width = 0.8 / len(group)
        for j, r in enumerate(group):
            steps = sorted(int(s) for s in r["steps_histogram"])
            frac = [r["steps_histogram"][str(s)] / r["n"] for s in steps]
            ax.bar([s - 0.4 + width * (j + 0.5) for s in steps], frac, width, label=run_label(r))
        ax.set(title=f"steps used, {halt}", ylabel="fraction of puzzles")
        ax.set_xticks(sorted({int(k) for r in group for k in r["steps_histogram"]}))
        ax.legend(fontsize=7)
    ax.set_xlabel("supervision steps")
    fig.tight_layout()
    fig.savefig(path)


def plot_latency(runs: Sequence[dict], path: Path) -> None:
    runs = sorted(runs, key=lambda r: r["backend"])
    backends = list(dict.fromkeys(r["backend"] for r in runs))
    fig = _figure(max(6, 0.7 * len(runs) + 2), 5)
    ax = fig.add_subplot()
    p50 = [r["latency_ms"]["p50"] for r in runs]
    up = [r["latency_ms"]["p90"] - r["latency_ms"]["p50"] for r in runs]
    colors = [f"C{backends.index(r['backend'])}" for r in runs]
    ax.bar(range(len(runs)), p50, yerr=[[0] * len(runs), up], capsize=4, color=colors)
    ax.set_xticks(range(len(runs)), [run_label(r) for r in runs], rotation=35, ha="right", fontsize=7)
    ax.set(ylabel="latency per solve (ms)", title="latency by backend (bar p50, whisker p90)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def plot_all(runs: Sequence[dict], out: Path) -> None:
    for name, plot in zip(PLOTS, (plot_pareto, plot_steps, plot_latency)):
        plot(runs, Path(out) / name)


# -- writing -------------------------------------------------------------------------------------------------

def _write(out_dir, files: dict[str, str], runs: Sequence[dict]) -> Path:
    def write(tmp: Path) -> None:
        for name, text in files.items():
            (tmp / name).write_text(text)
        if not plots_skipped():
            plot_all(runs, tmp)

    return atomic_dir(out_dir, write, "report")


def _dumps(doc: dict) -> str:
    try:
        return json.dumps(doc, indent=2, allow_nan=False) + "\n"
    except ValueError:
        raise TRMEdgeError("report holds NaN or infinity: refusing to write invalid JSON") from None


def write_report(report: dict, out_dir: str | os.PathLike) -> Path:
    """report.json, report.md and the plots (where matplotlib is installed), all or nothing."""
    validate_report(report)
    return _write(out_dir, {"report.json": _dumps(report), "report.md": render_markdown(report)}, report["runs"])


def compare(reports: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> dict:
    """Join runs of several reports (one per machine) into compare.json, compare.md and the same plots."""
    if not reports:
        raise TRMEdgeError("compare needs at least one report")
    claim(out_dir, "report")
    loaded = [(Path(p), load_report(p)) for p in reports]
    labels = [rep["machine"]["label"] for _, rep in loaded]
    where = [p.parent.name if p.name == "report.json" else p.name if p.is_dir() else p.stem for p, _ in loaded]
    labels = [f"{lab} ({w})" if labels.count(lab) > 1 else lab for lab, w in zip(labels, where)]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} #{i + 1}" for i, lab in enumerate(labels)]
    runs = [dict(run, machine=lab) for lab, (_, rep) in zip(labels, loaded) for run in rep["runs"]]
    doc = {"schema_version": 1, "kind": "compare",
           "reports": [{"path": os.fspath(p), "machine": lab, "facts": rep["machine"], "bundle": rep["bundle"],
                        "data": rep["data"], "energy": rep["energy"], "created": rep["created"],
                        "references": rep.get("references") or [rep["reference"]]}
                       for lab, (p, rep) in zip(labels, loaded)],
           "runs": runs}
    md = ["# trm-edge comparison", "", *(f"- {machine_line(dict(r['facts'], label=r['machine']))}. "
                                         f"{_energy_note(r['energy'])} {reference_note(r)}" for r in doc["reports"]),
          "",
          _markdown_table(runs), "", _images(), ""]
    _write(out_dir, {"compare.json": _dumps(doc), "compare.md": "\n".join(md)}, runs)
    return doc
