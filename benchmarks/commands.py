"""`trm-edge bench | compare | doctor`: option parsing only; the work is in harness, report, remote and machine.

Registered by trm_edge/cli.py through `register(app)`; the shared options and consoles come from trm_edge.console.
"""

import json
import shlex
from typing import Annotated

import typer
from rich.markup import escape

from trm_edge.api import parse_int_list, split_list
from trm_edge.console import JsonOpt, QuietOpt, ThreadsOpt, err, out, word_table
from trm_edge.errors import TRMEdgeError
from trm_edge.progress import Reporter


def split_halts(text: str) -> list[str]:
    """Comma-separated policies whose own options (min=, max=, verify) also follow commas:
    `fixed:16,learned:0,min=2,verify` -> ['fixed:16', 'learned:0,min=2,verify']."""
    policies: list[str] = []
    for part in split_list(text):
        if ("=" in part or part == "verify") and policies:
            policies[-1] += f",{part}"
        else:
            policies.append(part)
    return policies


def register(app: typer.Typer) -> None:
    @app.command()
    def bench(
        bundles: Annotated[list[str], typer.Argument(help="Bundle directories (hold manifest.json); several, e.g. "
                                                     "one model exported at several --depth, are one more axis.")],
        backend: Annotated[str, typer.Option(help="Comma-separated: ort, openvino, litert, torch; auto: the route "
                                             "`tune` chose here (with fp32, step and no --threads), else ort.")
                           ] = "auto",
        precision: Annotated[str, typer.Option(help="Comma-separated: fp32 and the bundle's int8 modes.")] = "fp32",
        graph: Annotated[str, typer.Option(help="Comma-separated: step (host loop), loop, unrolled (in-graph).")
                         ] = "step",
        halt: Annotated[str, typer.Option(help="Comma-separated policies, e.g. fixed:16,learned:0,min=2.")
                        ] = "fixed,learned:0",
        views: Annotated[str, typer.Option(help="Comma-separated numbers of views per puzzle, e.g. 1,4,16.")] = "1",
        data: Annotated[str, typer.Option(help="Puzzle file (one a line, optional ',solution') or 'builtin'.")
                        ] = "builtin",
        n: Annotated[int, typer.Option("-n", "--puzzles", min=1, help="Puzzles per run (the first N of the data).")
                     ] = 64,
        batch: Annotated[int, typer.Option(min=1, max=65536, help="Puzzles per solve call.")] = 1,
        threads: ThreadsOpt = None,
        warmup: Annotated[int, typer.Option(min=0, help="Untimed batches before each run (each round of it).")] = 2,
        rounds: Annotated[int, typer.Option(min=1, help="Cut the puzzles into this many slices and let the runs take "
                                            "turns, a slice each, rotating who goes first: a machine whose speed "
                                            "drifts then slows every run alike.")] = 1,
        energy: Annotated[str, typer.Option(help="auto, none, rapl, pi5, android or estimate[:PROFILE].")] = "auto",
        idle_seconds: Annotated[float, typer.Option(min=0, max=3600, help="Idle interval for the energy baseline.")]
        = 1.0,
        out_dir: Annotated[str, typer.Option("--out", "-o", help="Report directory (new, empty or a report).")
                           ] = "bench-report",
        remote: Annotated[str | None, typer.Option(help="Run on a device: ssh://user@host[:port].")] = None,
        remote_command: Annotated[str, typer.Option(help="The device's trm-edge command.")] = "trm-edge",
        ssh_opts: Annotated[str, typer.Option(help="Extra ssh options, e.g. '-i ~/.ssh/pi -o ConnectTimeout=10'.")
                            ] = "",
        as_json: JsonOpt = False,
        quiet: QuietOpt = False,
    ) -> None:
        """Accuracy, agreement with fp32, steps, latency, throughput, memory and energy per run; writes
        report.json, report.md and, where matplotlib is installed, plots to --out."""
        plots = _announce_plots()
        if remote:
            from trm_edge.benchmarks.remote import RemoteTarget, run_remote

            if len(bundles) > 1:
                raise TRMEdgeError(f"--remote runs one bundle at a time; got {len(bundles)} (bench each, then "
                                   "`trm-edge compare` the reports)")
            bundle = bundles[0]

            args = ["--backend", backend, "--precision", precision, "--graph", graph, "--halt", halt, "--views", views,
                    "-n", str(n),
                    "--batch", str(batch), "--warmup", str(warmup), "--energy", energy,
                    "--idle-seconds", str(idle_seconds), *(["--threads", str(threads)] if threads else []),
                    *(["--rounds", str(rounds)] if rounds > 1 else [])]  # a device's older trm-edge has no --rounds
            with Reporter("bench", err, quiet) as rep:
                report = run_remote(RemoteTarget(remote, shlex.split(ssh_opts), remote_command), bundle, args, out_dir,
                                    data, announce=rep.status)
        else:
            from trm_edge.benchmarks.harness import BenchOptions, run_bench

            options = BenchOptions(split_list(backend), split_list(precision), split_list(graph), split_halts(halt),
                                   parse_int_list(views, "--views"), data, n, batch, threads, warmup, energy,
                                   idle_seconds, rounds)
            with Reporter("bench", err, quiet) as rep:
                report = run_bench(bundles, options, out_dir, progress=rep.progress)
        if as_json:
            print(json.dumps(report, indent=2))
            return
        shown = ", ".join(report.get("bundles", [report["bundle"]]))  # a remote report names one bundle
        _print_runs(out, report["runs"], title=f"{report['machine']['label']}: {shown}; = ref: same answers as "
                    + " ".join(report["reference"][k] for k in ("backend", "precision", "graph", "halt")))
        for s in report["skipped"]:
            err.print(f"skipped {s['backend']}/{s['precision']}/{s['graph']}: {s['reason']}", markup=False,
                      highlight=False)
        if over := [r for r in report["runs"] if (r.get("peak_share") or 0) > 1]:
            err.print(f"{over[0]['backend']}/{over[0]['precision']} ran at {over[0]['peak_share']:.0%} of the cached "
                      "peak: it was measured while other work ran; `trm-edge doctor --refresh` measures it again "
                      "(the best figure is kept)", markup=False, highlight=False)
        if report["energy"]["estimate"]:
            err.print("energy figures marked ~ are ESTIMATES (CPU-seconds x a power profile), not measurements")
        out.print(f"report written to {out_dir}/report.json, report.md{plots}")

    @app.command()
    def compare(
        reports: Annotated[list[str], typer.Argument(help="report.json files (or directories holding one).")],
        out_dir: Annotated[str, typer.Option("--out", "-o", help="Output directory (new, empty or a report).")
                           ] = "bench-compare",
        as_json: JsonOpt = False,
    ) -> None:
        """Join benchmark reports from several machines into one table and the same plots."""
        from trm_edge.benchmarks.report import compare as compare_reports

        plots = _announce_plots()
        doc = compare_reports(reports, out_dir)
        if as_json:
            print(json.dumps(doc, indent=2))
            return
        _print_runs(out, doc["runs"], title="comparison; = ref: same answers as each machine's fp32 reference")
        out.print(f"written to {out_dir}/compare.json, compare.md{plots}")

    @app.command()
    def tune(
        bundle: Annotated[str, typer.Argument(help="Bundle directory (holds manifest.json).")],
        data: Annotated[str, typer.Option(help="Puzzle file (one a line) or 'builtin'.")] = "builtin",
        n: Annotated[int, typer.Option("-n", "--puzzles", min=1, help="Puzzles each route solves a round.")] = 32,
        batch: Annotated[int, typer.Option(min=1, max=65536, help="Puzzles per solve call (1: one at a time, as an "
                                           "app solves).")] = 1,
        threads: Annotated[str | None, typer.Option(help="Comma-separated thread counts to try (default: 1 and "
                                                    "all cores).")] = None,
        graph: Annotated[str, typer.Option(help="Comma-separated graph forms to try. Only the step graph runs "
                                           "checked answers and views.")] = "step",
        as_json: JsonOpt = False,
        quiet: QuietOpt = False,
    ) -> None:
        """Time every route of the bundle this machine can run (engine x precision whose accuracy guard passed x
        graph x threads) on the same puzzles, and remember the fastest for this bundle on this machine: solve, eval
        and bench take it when no --backend, --precision, --graph or --threads is given."""
        from trm_edge.benchmarks.tune import tune as run_tune

        counts = tuple(parse_int_list(threads, "--threads")) if threads else None
        if counts and min(counts) < 1:
            raise TRMEdgeError(f"--threads {threads!r}: thread counts are 1 or more")
        with Reporter("tune", err, quiet) as rep:
            doc = run_tune(bundle, data, n, batch, counts, tuple(split_list(graph)), progress=rep.progress)
        if as_json:
            print(json.dumps(doc, indent=2))
            return
        rows = [[("* " if i == 0 else "") + r["route"], f"{r['ms_per_solve']:.2f}", f"{r['vs_fastest']:.2f}x",
                 f"{r['mean_steps']:.2f}", f"{r['agreement_with_fp32']:.1%}"] for i, r in enumerate(doc["routes"])]
        out.print(word_table(["route", "ms/solve", "vs best", "steps", "= fp32"], rows,
                             title=f"{doc['machine_label']}: {doc['puzzles']} puzzles, {doc['policy']}, batch "
                                   f"{doc['batch']}, median of 3 rounds"))
        for s in doc["skipped"]:
            err.print(f"skipped {s['route']}: {s['reason']}", markup=False, highlight=False)
        where = f"remembered in {doc['saved']}" if doc["saved"] else "NOT remembered (the cache cannot be written)"
        out.print(f"chosen: {doc['routes'][0]['route']}, {where}; solve, eval and bench take it when no route is "
                  "named (--backend ort runs ONNX Runtime fp32 again)", highlight=False)

    @app.command()
    def doctor(refresh: Annotated[bool, typer.Option("--refresh", help="Measure the matrix-multiply peak again "
                                                     "(it is cached per machine and engine versions).")] = False,
               as_json: JsonOpt = False) -> None:
        """Installed runtimes, the CPU features int8/bf16 speed depends on, the energy meters present, this machine's
        matrix-multiply peak through each engine (a few seconds once, then cached) and the routes `tune` chose here;
        exits 1 when no engine can run here (none installed, or a 32-bit ARM system)."""
        from trm_edge.benchmarks.machine import doctor as run_doctor

        res = run_doctor(refresh)
        if as_json:
            print(json.dumps(res, indent=2))
        else:
            _doctor_table(res)
        for problem in res["problems"]:
            err.print(f"[red]problem:[/] {escape(problem)}")  # escaped: rich would read [ort] as markup
        if res["problems"]:
            raise typer.Exit(1)

    def _announce_plots() -> str:
        """Say before any work when the report will have no plots; returns what the final line adds for them."""
        from trm_edge.benchmarks.report import plots_skipped

        note = plots_skipped()
        if note:
            err.print(note, markup=False, highlight=False)
        return "" if note else " and plots"

    def _doctor_table(res: dict) -> None:
        from rich.table import Table

        t = Table(show_header=False, title="trm-edge doctor")
        for dist, version in res["runtimes"].items():
            t.add_row(f"runtime {dist}", version or "[dim]not installed[/]")
        if res["device"]:
            t.add_row("device", res["device"])
        t.add_row("cpu", f"{res['cpu_model']} ({res['arch']})")
        for feat, on in res["cpu_features"].items():
            t.add_row(f"cpu feature {feat}", "[green]yes[/]" if on else "no")
        t.add_row("emulation", res["emulation"] or "none detected")
        for m in res["energy_meters"]:
            t.add_row(f"energy {m['meter']}", ("[green]present[/]" if m["present"] else "absent")
                      + (f": {m['reason']}" if m["reason"] else ""))
        peak = res["peak"] or {}
        for kind, unit in (("fp32", "GFLOP/s"), ("int8", "GOP/s")):
            if best := peak.get(kind):
                t.add_row(f"peak {kind}", f"{best['gflop_per_s']:.0f} {unit} ({best['engine']}; best of "
                          f"{peak.get('measurements', 1)} measurement(s), --refresh measures again)")
        for probe in peak.get("probes", []):
            unit = "GFLOP/s" if probe["kind"] == "fp32" else "GOP/s"
            t.add_row(f"last probe {probe['kind']} {probe['engine']}",
                      f"{probe['gflop_per_s']:.0f} {unit} ({probe['size']}² matrices)" if probe["gflop_per_s"]
                      else f"not measured: {escape(probe['reason'] or '?')}")
        for choice in res["tuned"]:
            t.add_row(f"tuned {escape(choice['path'])}", f"{choice['route']}, {choice['ms_per_solve']:.1f} ms a solve")
        t.add_row("tasks", ", ".join(name if source == "trm-edge" else f"{name} ({escape(source)})"
                                     for name, source in res["tasks"].items()))
        out.print(t)


def _print_runs(console, runs: list[dict], title: str) -> None:
    from trm_edge.benchmarks.report import table

    console.print(word_table(*table(runs, compact=True), title=title))
