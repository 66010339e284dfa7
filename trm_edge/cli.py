"""The `trm-edge` command: each command parses its options and calls one library function.

Errors a user can fix exit 2 (1 for a failed check) with one line on stderr, never a traceback.
"""

from __future__ import annotations

import inspect
import json
import sys
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from trm_edge import api, hub
from trm_edge.atomic import claim
from trm_edge.benchmarks.commands import register as register_bench
from trm_edge.console import (
    BackendOpt,
    BatchOpt,
    DepthOpt,
    GraphOpt,
    HaltOpt,
    JsonOpt,
    PrecisionOpt,
    QuietOpt,
    SeqLenOpt,
    TaskOpt,
    ThreadsOpt,
    ViewsOpt,
    err,
    out,
    word_table,
)
from trm_edge.errors import TRMEdgeError
from trm_edge.extras import require
from trm_edge.halting import MAX_STEPS
from trm_edge.progress import Reporter
from trm_edge.runtimes.commands import register as register_devices

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Tiny Recursive Models from training to edge devices.")
data_app = typer.Typer(no_args_is_help=True, help="Build datasets in the official on-disk layout.")
app.add_typer(data_app, name="data")
@app.command()
def info(model: Annotated[str | None, typer.Argument(help="Bundle, model dir, official run dir, step_N file or "
                                                        "hf://OWNER/REPO/FOLDER (a run on the hub); "
                                                        "default: the bundled model.")] = None,
         seq_len: SeqLenOpt = None, as_json: JsonOpt = False) -> None:
    """A model's config, parameter count, FLOPs per supervision step and per solve, file sizes; a bundle's manifest
    (forms, engines, precisions, verification and int8 guard figures), read without torch."""
    res = api.info(model, seq_len)
    if as_json:
        print(json.dumps(res, indent=2))
        return
    if res["kind"] == "bundle":
        print_bundle(res)
        t = Table(title="its model", show_header=False)
        t.add_row("task / halting", f"{res['task']} / {res['halting']}")
        for k, v in res["config"].items():
            t.add_row(k, str(v))
        out.print(t)
        return
    t = Table(title=res["source"], show_header=False)
    t.add_row("format / task", f"{res['format']} / {res['task']}")
    t.add_row("parameters", f"{res['parameters']:,} (+ puzzle table {res['puzzle_embedding_rows']:,} rows)")
    t.add_row("FLOPs per step", f"{res['flops_per_step'] / 1e9:.3f} G ({res['module_calls_per_step']} module calls)")
    t.add_row("FLOPs per solve", f"{res['flops_per_solve'] / 1e9:.3f} G ({res['config']['halt_max_steps']} steps)")
    for k, v in res["config"].items():
        t.add_row(k, str(v))
    for name, size in res["files"].items():
        t.add_row(f"file {name}", f"{size / 1e6:.2f} MB")
    out.print(t)


@app.command()
def solve(args: Annotated[list[str], typer.Argument(metavar="[MODEL] PUZZLE...",
                                                    help="A puzzle string, a file (one a line) or - for stdin.")],
          halt: HaltOpt = None, views: ViewsOpt = None, task: TaskOpt = None, seq_len: SeqLenOpt = None,
          batch: BatchOpt = 64, backend: BackendOpt = None,
          graph: GraphOpt = "step", precision: PrecisionOpt = "fp32", threads: ThreadsOpt = None,
          depth: DepthOpt = None,
          task_name: Annotated[str | None, typer.Option(help="ARC bundle exported with --tasks: which task the file "
                                                        "is (default: its file name, else its demonstrations).")]
          = None,
          augmentations: Annotated[int | None, typer.Option(min=1, help="ARC bundle exported with --tasks: vote over "
                                                            "at most this many of each task's variants.")] = None,
          as_json: JsonOpt = False) -> None:
    """Solve puzzles: prints each answer, whether it is right, the steps used and the time. On an ARC bundle exported
    with --tasks, a task is solved under each variant it carries and voted on, as the official evaluation does."""
    model, puzzles = api.split_model_and_puzzles(args)
    loaded = api.open_model(model, api.Opening(task, seq_len, depth, None, backend, graph, precision, threads))
    if loaded.rows is not None or task_name or augmentations:
        with Reporter("solve", err, stage="solving") as rep:
            res = api.solve_arc_tasks(loaded, puzzles, task_name, halt, batch, augmentations, rep.progress)
        return print_arc_tasks(res, as_json)
    if loaded.codec.name == "arc" and loaded.config.num_puzzle_identifiers > 1:
        err.print("[yellow]note:[/] this ARC model solves under puzzle row 0 (the blank identifier), where a TRM "
                  "scores ~0%; export it with --tasks to solve each task under its own rows")
    res = api.solve_puzzles(loaded, puzzles, halt, batch, views)
    for i, r in enumerate(res["results"], 1):
        if r["fault_step"]:
            err.print(f"[red]warning:[/] puzzle #{i}: NaN or Inf in the model's state at supervision step "
                      f"{r['fault_step']}; no answer (check the model's weights)")
    if as_json:
        print(json.dumps(res, indent=2))
    else:
        for i, r in enumerate(res["results"], 1):
            mark = ("answered (no label, and no rules to check it by)" if r["solved"] is None else
                    f"{'[green]solved[/]' if r['solved'] else '[red]not solved[/]'} ({r['checked_by']})")
            q = "n/a" if r["q_halt"] is None else f"{r['q_halt']:+.2f}"
            views = f", view {r['view']}/{res['views']}, {r['view_steps']} in all" if res["views"] > 1 else ""
            out.print(f"[bold]#{i}[/] {mark}, {r['steps']} steps{views}, q_halt {q}")
            if r["tokens"] is not None:
                out.print(loaded.codec.render(np.array(r["tokens"])), highlight=False)
        told = (f"{res['n']} answered (no labels, and no rules to check them by)" if not res["judged"] else
                f"{res['solved']}/{res['n']} solved" + (f" ({res['n'] - res['judged']} unchecked)"
                                                        if res["judged"] < res["n"] else ""))
        out.print(f"{told}, {res['ms_per_puzzle']:.1f} ms per puzzle, "
                  f"{res['halt']}, {res['views']} view(s)")  # the policy as --json gives it
        out.print(f"[dim]{res['model']}[/]", highlight=False)
    if res["faults"]:
        raise typer.Exit(1)


def print_arc_tasks(res: dict, as_json: bool) -> None:
    """Each task's two attempts with their votes; --json: ARC Prize's submission.json."""
    if as_json:
        print(json.dumps(api.submission(res)))
        return
    for t in res["tasks"]:
        out.print(f"[bold]{t['task']}[/] ({t['source']}): {t['variants']} variants, {t['mean_steps']:.1f} steps "
                  f"on average" + (f", {t['faults']} NaN/Inf" if t["faults"] else ""), highlight=False)
        for j, pair in enumerate(t["pairs"], 1):
            for a, (grid, votes) in enumerate(zip(pair["attempts"], pair["votes"]), 1):
                out.print(f"test {j} attempt {a}: {votes} of {t['variants']} votes", highlight=False)
                out.print("\n".join("".join(str(c) for c in row) for row in grid) or "(no grid: the answer starts "
                          "with no colour at the top-left corner)", highlight=False)
            if pair["correct"] is not None:
                out.print("[green]correct[/]" if pair["correct"] else "[red]not correct[/]")
    out.print(f"{len(res['tasks'])} task(s) in {res['seconds']:.1f} s, {res['halt']}")
    out.print(f"[dim]{res['model']}[/]", highlight=False)


@app.command("eval")
def eval_(model: Annotated[str | None, typer.Argument(help="Default: the bundled model.")] = None,
          data: Annotated[list[str], typer.Option(help="Puzzle file (puzzle,solution a line), 'builtin', or a dataset "
                                                  "directory in the official layout (its test split; ARC: pass@K "
                                                  "by voting over its variants).")] = None,
          halt: Annotated[list[str], typer.Option(help="Halting policies to compare (default: the model's).")] = None,
          views: Annotated[list[int], typer.Option(min=1, max=256, help="Numbers of views to compare.")] = None,
          limit: Annotated[int | None, typer.Option(min=1, help="At most this many puzzles per file.")] = None,
          augmentations: Annotated[int | None, typer.Option(min=1, help="ARC dataset: vote over each task's first K "
                                                            "variants only (pass@K at a budget).")] = None,
          batch: BatchOpt = 64, task: TaskOpt = None, seq_len: SeqLenOpt = None, backend: BackendOpt = None,
          graph: GraphOpt = "step", precision: PrecisionOpt = "fp32", threads: ThreadsOpt = None,
          depth: DepthOpt = None, as_json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Exact-solve rate, token accuracy, mean steps and the steps histogram on puzzle files."""
    loaded = api.open_model(model, api.Opening(task, seq_len, depth, None, backend, graph, precision, threads,
                                               api.dataset_among(data)))
    with Reporter("eval", err, quiet, stage="solving") as rep:
        res = api.eval_model(loaded, data or ["builtin"], halt, batch, limit, advance=rep.advance, views=views or [1],
                             per_task=augmentations)
    if as_json:
        print(json.dumps(res, indent=2))
        return
    for r in res["runs"]:
        if r["faults"]:
            err.print(f"[red]warning:[/] {r['data']} under {r['halt']}: NaN or Inf in {r['faults']} of {r['n']} "
                      "puzzles (counted as not solved; check the model's weights)")
    rows = [[r["data"].removesuffix(".txt").removeprefix(f"{loaded.codec.name}-"),
             r["halt"].replace(",min=1", "").replace(",", " "), str(r["views"]),
             str(r["n"]), f"{100 * r['exact_accuracy']:.1f}%",
             "-" if r["token_accuracy"] is None else f"{100 * r['token_accuracy']:.1f}%", f"{r['mean_steps']:.2f}",
             f"{r['mean_view_steps']:.2f}"] for r in res["runs"]]
    out.print(word_table(["data", "halt", "views", "n", "exact", "tokens", "steps", "tried"], rows, res["model"]))
    for r in res["runs"]:
        if "vote" in r:
            v = r["vote"]
            out.print(f"{r['data']}: ARC vote over {v['rows']} augmented rows, {v['pairs']} test pairs of "
                      f"{v['tasks']} tasks: pass@1 {100 * v['pass@1']:.1f}%, pass@2 {100 * v['pass@2']:.1f}%")
    out.print("[dim]steps: of the view that answered; tried: of every view tried; histograms: --json[/]")


@app.command()
def export(model: Annotated[str | None, typer.Argument(help="Model dir, official run dir, step_N file or "
                                                       "hf://OWNER/REPO/FOLDER (a run on the hub); default: "
                                                       "the bundled model.")] = None,
           out_dir: Annotated[str, typer.Option("-o", "--out", help="Bundle directory (new, empty, or a bundle to "
                                                "replace).")] = "trm-bundle",
           graph: Annotated[str, typer.Option("--graph", help="Forms: step,loop,unrolled.")] = "step,loop",
           formats: Annotated[str, typer.Option("--format", help="onnx,openvino,litert (ONNX is always written: "
                                                "the others are converted from it or checked beside it).")] = "onnx",
           halt: HaltOpt = None,
           max_steps: Annotated[int | None, typer.Option(min=1, max=MAX_STEPS, help="Steps of the unrolled graph.")]
           = None,
           opset: Annotated[int, typer.Option(help="ONNX opset (18-24).")] = 18,
           batch: Annotated[int | None, typer.Option(min=1, max=4096, help="Static batch size (default: dynamic).")]
           = None,
           puzzle_ids: Annotated[str | None, typer.Option(help="Keep only these puzzle-table rows, e.g. 1,5,9.")]
           = None,
           tasks: Annotated[str | None, typer.Option(help="ARC: keep the rows of these tasks (ids, comma-separated), "
                                                     "named in the bundle, for `solve BUNDLE task.json`.")] = None,
           augmentations: Annotated[int, typer.Option(min=1, help="With --tasks: variants kept per task, the "
                                                      "identity first (each one more solve in a vote).")] = 8,
           dataset: Annotated[str | None, typer.Option(help="The model's dataset (official layout; default: the "
                                                       "run's data_paths): a task trm-edge does not know draws its "
                                                       "verification and int8 guard puzzles from its test split; "
                                                       "--tasks reads the rows' names there.")]
           = None,
           quantize: Annotated[str | None, typer.Option(help="int8 (the best route: static with ranges learned by "
                                                  "`finetune --qat`, else int8-rows), int8-static, int8-dynamic, "
                                                  "int8-rows, int8-weights, int4-weights, comma-separated, for "
                                                  "every format offering it, or for one as FORMAT:MODE "
                                                  "(litert:int8-dynamic).")]
           = None,
           calib: Annotated[int, typer.Option(help="Calibration puzzles (carries from every step).")] = 32,
           max_drop: Annotated[float, typer.Option(min=0, max=100, help="Exact-solve drop budget, percentage points.")]
           = 1.0,
           heldout: Annotated[int, typer.Option(help="Held-out puzzles for the int8 accuracy guard (a close call "
                                                      "draws half as many more at a time, up to 4 times as many).")]
           = 512,
           guard_minutes: Annotated[float, typer.Option(min=0, help="Cap on the int8 guard's time a candidate; "
                                                        "undecided then, the point estimate decides, and the bundle "
                                                        "says so; 3 candidates failed so end the ladder (0: no "
                                                        "cap).")] = 5.0,
           task: TaskOpt = None, seq_len: SeqLenOpt = None, depth: DepthOpt = None, as_json: JsonOpt = False,
           quiet: QuietOpt = False) -> None:
    """Export to ONNX (and OpenVINO IR, LiteRT), verify every graph against the PyTorch reference, optionally
    quantize under an accuracy guard, and write a bundle (all or nothing)."""
    require("export", "export", "torch")
    from trm_edge.export import ExportOptions, QuantOptions, export_bundle

    if tasks and puzzle_ids:
        raise TRMEdgeError("--tasks and --puzzle-ids both choose the rows to keep: give one")
    ids = tuple(api.parse_int_list(puzzle_ids, "--puzzle-ids")) if puzzle_ids else None
    claim(out_dir, "bundle")  # before minutes of work (a download, the export), not after
    model = hub.resolve(model)  # an hf:// run, fetched once: its files are read below
    rows = named = None
    if tasks:
        ids, rows, named = api.arc_export_rows(model, tasks, augmentations, dataset)
    options = ExportOptions(tuple(api.split_list(graph)), tuple(api.split_list(formats)), halt, max_steps, opset,
                            batch, ids, rows, quant=QuantOptions(tuple(api.split_list(quantize)), calib, heldout,
                                                                 max_drop, guard_minutes))
    if api.is_bundle(model):
        raise TRMEdgeError(f"{model} is already an exported bundle; export starts from a model or checkpoint")
    loaded = api.open_model(model, api.Opening(task, seq_len, depth, ids, dataset=dataset))  # only the kept rows
    if rows and loaded.codec.name != "arc":
        raise TRMEdgeError(f"--tasks: {model} is a {loaded.codec.name} model; ARC models have tasks")
    if rows and loaded.meta.get("table_rows") not in (None, named):
        err.print(f"[yellow]warning:[/] the dataset names {named:,} puzzle rows but the checkpoint has "
                  f"{loaded.meta['table_rows']:,}: unless it is the dataset the model was trained on, the names do "
                  "not match the rows (answers ~0%)")
    with Reporter("export", err, quiet, stage="exporting") as rep:
        path = export_bundle(loaded.model, dict(loaded.meta, task=loaded.codec.name), out_dir, options,
                             status=rep.status)
    summary = api.bundle_summary(path)
    for q in [*summary["verification"].values(), *summary["quantization"].values()]:
        for w in q.get("warnings", []):
            err.print(f"[yellow]warning:[/] {w}")
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    print_bundle(summary)


def print_bundle(summary: dict) -> None:
    """What an export wrote, as `export` reports it and `info BUNDLE` shows it again later."""
    t = Table("format", "graph", "precision", "file", "MB", "init ms", title=f"bundle {summary['path']}")
    for row in summary["graphs"]:
        t.add_row(row["format"], row["graph"], row["precision"], row["file"], f"{row['mb']:.2f}",
                  str(row["session_init_ms"] or ""))
    out.print(t)
    for fmt, v in summary["verification"].items():
        fewer = f" of {v['asked']} asked (the model's cost)" if v.get("asked", v["puzzles"]) > v["puzzles"] else ""
        n = v["puzzles"]
        out.print(f"{fmt}: verified against the PyTorch reference on {n} puzzle{'s' * (n != 1)}{fewer}: passed")
    if t := summary.get("trained_dtype"):
        out.print(f"trained in {t['forward_dtype']}: that forward gives the fp32 graphs' answers on "
                  f"{t['answers_identical']:.0%} of the {t['puzzles']} verification puzzles under {t['policy']} "
                  f"(tokens {t['tokens_identical']:.1%} identical)")
    if tasks := summary.get("arc_tasks"):
        listed = ", ".join(f"{t} ({n})" for t, n in list(tasks.items())[:8]) + (", …" if len(tasks) > 8 else "")
        out.print(f"ARC tasks (variants): {listed}; solve one with: trm-edge solve {summary['path']} TASK.json",
                  highlight=False)
    for note in summary["notes"]:
        out.print(f"note: {note}")
    for name, q in summary["quantization"].items():
        g = q["guard"]
        share = f"{q['quantized_matmuls']} of {q['matmuls']} MatMuls in int8; " if "matmuls" in q else ""
        lo, hi = g["drop_ci95_pp"]
        out.print(f"{name}: exact {g['int8_exact']:.1%} vs fp32 {g['fp32_exact']:.1%} on {g['n']} held-out puzzles "
                  f"(drop {g['exact_drop_pp']:.2f} pp, 95% interval [{lo:g}, {hi:g}], "
                  f"budget {q['max_drop_pp']:g}), answers agree {g['answer_agreement']:.1%}, mean steps "
                  f"{g['int8_mean_steps']:.2f} vs {g['fp32_mean_steps']:.2f}; {share}"
                  f"step {q['speed']['speedup']:.2f}x fp32's speed at batch 1"
                  + (f"; decided by {g['decided_by']}" if "decided_by" in g else ""))


@app.command()
def push(bundle: Annotated[str, typer.Argument(help="An exported bundle (every file is verified first).")],
         target: Annotated[str, typer.Argument(metavar="hf://OWNER/REPO[/FOLDER]",
                                               help="A model repository on the Hugging Face Hub (created if missing) "
                                               "and a folder in it; the main branch.")],
         private: Annotated[bool, typer.Option("--private", help="Create the repository private (one that exists "
                                               "keeps its visibility).")] = False,
         message: Annotated[str | None, typer.Option("--message", "-m", help="The commit message.")] = None,
         as_json: JsonOpt = False) -> None:
    """Publish a bundle on the Hugging Face Hub in one commit, with a model card (README.md) made from its manifest:
    task, sizes, engines, verification and int8 guard figures. Log in first: `hf auth login`, or HF_TOKEN."""
    res = hub.push(bundle, target, private, message)
    if as_json:
        print(json.dumps(res, indent=2))
        return
    where = "/".join(filter(None, [res["repo"], res["folder"]]))
    out.print(f"pushed {res['files']} files ({res['bytes'] / 1e6:.2f} MB) to {where}: {res['url']}", highlight=False)


@app.command()
def train(out_dir: Annotated[str, typer.Option("-o", "--out", help="Run directory (resumes if it holds state).")]
          = "trm-run",
          task: Annotated[str, typer.Option(help="Recipe: sudoku (the bundled model's) or sudoku-large (for a "
                                            "GPU).")] = "sudoku",
          steps: Annotated[int | None, typer.Option(min=1, help="Override the recipe's optimizer steps.")] = None,
          minutes: Annotated[float | None, typer.Option(min=0.01, help="Fit the optimizer steps to this much "
                                                        "training time (measured in the warm-up).")] = None,
          device: Annotated[str, typer.Option(help="auto (a GPU if torch sees one), cpu or cuda.")] = "auto",
          config: Annotated[str | None, typer.Option(help="A TrainConfig JSON instead of a named recipe.")] = None,
          official: Annotated[bool, typer.Option(help="Also write the official checkpoint format.")] = False,
          data_only: Annotated[bool, typer.Option("--data-only", help="Build and cache the run's data, then stop "
                                                  "(prepare a GPU run on a CPU machine).")] = False,
          quiet: QuietOpt = False) -> None:
    """Train a TRM with a named recipe (CPU or GPU; under torchrun, DDP)."""
    require("train", "train", "torch")
    from trm_edge.training.launch import train_recipe
    from trm_edge.training.trainer import RunOptions

    options = RunOptions(device, None if minutes is None else 60 * minutes, official)
    with Reporter("train", err, quiet) as rep:
        path = train_recipe(task, out_dir, options, steps, config, data_only, report=rep)
    out.print(f"data written to {path}; train with the same -o" if data_only else f"model written to {path}")


@app.command()
def finetune(model: Annotated[str | None, typer.Argument(help="A trm-edge model dir; default: the bundled model.")]
             = None,
             out_dir: Annotated[str, typer.Option("-o", "--out", help="Run directory (resumes if it holds state).")]
             = "trm-finetune",
             qat: Annotated[bool, typer.Option("--qat", help="Quantization-aware: train through the int8 arithmetic "
                                               "that `export --quantize int8` ships, and learn its ranges.")] = False,
             steps: Annotated[int | None, typer.Option(min=1, help="Optimizer steps (default 600).")] = None,
             quiet: QuietOpt = False) -> None:
    """Continue training a model with its own recipe at a low rate; with --qat, for int8 that holds accuracy."""
    require("finetune", "train", "torch")
    from trm_edge.training.launch import finetune as run

    with Reporter("finetune", err, quiet) as rep:
        path = run(model, out_dir, steps=steps, qat=qat, report=rep)
    out.print(f"model written to {path}" + (f"; export it with: trm-edge export {path} --quantize int8" if qat else ""))


@data_app.command("build")
def data_build(task: Annotated[str, typer.Argument(help="sudoku, maze or arc")],
               out_dir: Annotated[str, typer.Option("-o", "--out", help="Dataset directory (new, empty or a dataset "
                                                    "to add to).")] = "trm-data",
               seed: Annotated[int | None, typer.Option(help="Random seed; default: the task's own (arc 42, as "
                                                        "the official builder; sudoku and maze 0).")] = None,
               knob: Annotated[list[str], typer.Option(help="KEY=VALUE builder knobs, e.g. n_train=1000.")] = None,
               quiet: QuietOpt = False) -> None:
    """Build a dataset (dataset.json + all__*.npy per split) the official trainer reads."""
    from trm_edge.training.datasets import build, parse_knobs

    kw = parse_knobs(knob or [])
    with Reporter("data build", err, quiet) as rep:
        build(task, out_dir, seed=seed, tracker=rep.tracker, **kw)


register_bench(app)
register_devices(app)


def _from_ctrl_c(e: BaseException | None) -> bool:
    """Some libraries turn a KeyboardInterrupt into another error while handling it (torch's exporter does, in a
    lazy import): a Ctrl-C is still a Ctrl-C."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def one_line(text: str) -> str:
    """Errors quote what the user gave; its control characters and line breaks are shown escaped, so the error
    stays one line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _one_paragraph_per_line(text: str | None) -> str | None:
    """Docstrings wrap at 120 columns in the source; help rewraps each paragraph to the terminal instead."""
    return text and "\n\n".join(" ".join(par.split()) for par in inspect.cleandoc(text).split("\n\n"))


def _readable(cmd) -> None:
    """Help that reads at 80 columns: typer shows a type beside every parameter (`<bool>` on each flag, `<list[str]>`,
    `<int range>`); here a flag shows none, a value one word (N, X, TEXT), an argument its metavar as written (also
    in the usage line), and each help paragraph is one line for the terminal to wrap."""
    cmd.help = _one_paragraph_per_line(cmd.help)
    for sub in getattr(cmd, "commands", {}).values():
        _readable(sub)
    for p in cmd.params:
        if isinstance(p, typer.core.TyperOption):
            p.metavar = "" if p.is_flag else {"int": "N", "float": "X"}.get(p.bare_type(), "TEXT")
        else:
            name = p.metavar or p.name.upper()
            name += "..." if p.nargs != 1 and not name.endswith("...") else ""
            usage = name if p.required else f"[{name}]"
            p.display_type_rich = lambda ctx: ""
            p._usage_display_name = lambda usage=usage: usage
    make_help = cmd.get_help_option

    def help_option(ctx, make_help=make_help):
        option = make_help(ctx)
        if option is not None:
            option.metavar = ""
        return option

    cmd.get_help_option = help_option


def main(argv: list[str] | None = None) -> None:
    command = typer.main.get_command(app)
    _readable(command)
    try:
        rv = command.main(args=argv, standalone_mode=False, prog_name="trm-edge")
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.TyperException as e:  # usage errors; a bare command shows its help
        if type(e).__name__ == "NoArgsIsHelpError":
            e.show()
            sys.exit(0)
        print(f"trm-edge: error: {one_line(e.format_message())} (see --help)", file=sys.stderr)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        print("trm-edge: interrupted", file=sys.stderr)
        sys.exit(130)
    except TRMEdgeError as e:
        print(f"trm-edge: error: {one_line(str(e))}", file=sys.stderr)
        sys.exit(e.exit_code)
    except Exception as e:
        if not _from_ctrl_c(e):
            raise
        print("trm-edge: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)
