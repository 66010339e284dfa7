"""The `trm-edge` command: each command parses its options and calls one library function.

Errors a user can fix exit 2 (1 for a failed check) with one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from trm_edge import api
from trm_edge.errors import TRMEdgeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Tiny Recursive Models from training to edge devices.")
data_app = typer.Typer(no_args_is_help=True, help="Build datasets in the official on-disk layout.")
app.add_typer(data_app, name="data")
out = Console()
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
SeqLenOpt = Annotated[int | None, typer.Option("--seq-len", help="For attention checkpoints without dataset.json.")]
TaskOpt = Annotated[str | None, typer.Option("--task", help="sudoku, maze or arc, when the model does not say.")]
HaltOpt = Annotated[str, typer.Option("--halt", help="fixed[:N] (official) or learned[:TAU][,min=K][,max=M].")]


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err, transient=True)


@app.command()
def info(model: Annotated[str | None, typer.Argument(help="Model dir, official run dir or step_N file; "
                                                        "default: the bundled model.")] = None,
         seq_len: SeqLenOpt = None, as_json: JsonOpt = False) -> None:
    """Config, parameter count, FLOPs per supervision step and per solve, file sizes."""
    res = api.model_info(model, seq_len)
    if as_json:
        print(json.dumps(res, indent=2))
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
          halt: HaltOpt = "fixed", task: TaskOpt = None, seq_len: SeqLenOpt = None,
          batch: Annotated[int, typer.Option(help="Puzzles per batch.")] = 64, as_json: JsonOpt = False) -> None:
    """Solve puzzles: prints each answer, whether it is right, the steps used and the time."""
    model, puzzles = api.split_model_and_puzzles(args)
    res = api.solve_puzzles(api.open_model(model, seq_len=seq_len, task=task), puzzles, halt, batch)
    if as_json:
        print(json.dumps(res, indent=2))
        return
    for i, r in enumerate(res["results"], 1):
        mark = "[green]solved[/]" if r["solved"] else "[red]not solved[/]"
        out.print(f"[bold]#{i}[/] {mark} (checked by {r['checked_by']}), {r['steps']} steps, q_halt {r['q_halt']:+.2f}")
        out.print(r["answer"], highlight=False)
    out.print(f"{res['solved']}/{res['n']} solved, {res['ms_per_puzzle']:.1f} ms per puzzle ({res['halt']}, "
              f"{res['model']})")


@app.command("eval")
def eval_(model: Annotated[str | None, typer.Argument(help="Default: the bundled model.")] = None,
          data: Annotated[list[str], typer.Option(help="Puzzle file (puzzle,solution a line) or 'builtin'.")] = None,
          halt: Annotated[list[str], typer.Option(help="Halting policies to compare.")] = None,
          limit: Annotated[int | None, typer.Option(help="At most this many puzzles per file.")] = None,
          batch: int = 64, task: TaskOpt = None, seq_len: SeqLenOpt = None, as_json: JsonOpt = False) -> None:
    """Exact-solve rate, token accuracy, mean steps and the steps histogram on puzzle files."""
    loaded = api.open_model(model, seq_len=seq_len, task=task)
    with _progress() as prog:
        bar = prog.add_task("solving", total=None)
        res = api.eval_model(loaded, data or ["builtin"], halt or ["fixed"], batch, limit,
                             advance=lambda n: prog.advance(bar, n))
    if as_json:
        print(json.dumps(res, indent=2))
        return
    t = Table("data", "halt", "n", "exact", "token acc", "mean steps", "steps histogram", title=res["model"])
    for r in res["runs"]:
        tok = "-" if r["token_accuracy"] is None else f"{100 * r['token_accuracy']:.2f}%"
        t.add_row(r["data"], r["halt"], str(r["n"]), f"{100 * r['exact_accuracy']:.2f}%", tok,
                  f"{r['mean_steps']:.2f}", " ".join(f"{k}:{v}" for k, v in r["steps_histogram"].items()))
    out.print(t)


@app.command()
def train(out_dir: Annotated[str, typer.Option("-o", "--out", help="Run directory (resumes if it holds state).")],
          task: Annotated[str, typer.Option(help="Recipe: sudoku (the bundled model's).")] = "sudoku",
          steps: Annotated[int | None, typer.Option(help="Override the recipe's optimizer steps.")] = None,
          official: Annotated[bool, typer.Option(help="Also write the official checkpoint format.")] = False) -> None:
    """Train a TRM with a named recipe (CPU or GPU; under torchrun, DDP)."""
    from trm_edge.training.launch import train_recipe

    path = train_recipe(task, out_dir, steps=steps, official=official, echo=lambda r: err.print(r, highlight=False))
    out.print(f"model written to {path}")


@data_app.command("build")
def data_build(task: Annotated[str, typer.Argument(help="sudoku, maze or arc")],
               out_dir: Annotated[str, typer.Option("-o", "--out")],
               seed: int = 0,
               knob: Annotated[list[str], typer.Option(help="KEY=VALUE builder knobs, e.g. n_train=1000.")] = None
               ) -> None:
    """Build a dataset (dataset.json + all__*.npy per split) the official trainer reads."""
    from trm_edge.training.datasets import build

    kw = {}
    for k in knob or []:
        key, sep, val = k.partition("=")
        if not sep:
            raise TRMEdgeError(f"--knob {k!r}: expected KEY=VALUE")
        kw[key] = json.loads(val) if val[:1] in "[{0123456789-tf" else val
    build(task, out_dir, seed=seed, **kw)


def main(argv: list[str] | None = None) -> None:
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="trm-edge")
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.TyperException as e:  # usage errors; a bare command shows its help
        if type(e).__name__ == "NoArgsIsHelpError":
            e.show()
            sys.exit(0)
        print(f"trm-edge: error: {e.format_message()} (see --help)", file=sys.stderr)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        print("trm-edge: interrupted", file=sys.stderr)
        sys.exit(130)
    except TRMEdgeError as e:
        print(f"trm-edge: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)
