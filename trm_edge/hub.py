"""Models on the Hugging Face Hub: `hf://OWNER/REPO[/FOLDER][@REVISION]` names an official run folder there (a
`step_N` and its `all_config.yaml`). Only what a load needs is fetched: the folder's highest `step_N`,
`all_config.yaml`, and `identifiers.json` / `dataset.json` where the folder has them, into huggingface_hub's own cache,
which answers alone when the hub cannot be reached (HF_HUB_OFFLINE=1, no network). A bundle goes the other way
(`push`): its verified files and a model card made from its manifest, in one commit."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from trm_edge.errors import TRMEdgeError
from trm_edge.extras import require

PREFIX = "hf://"
MAX_FILE_BYTES = 8 << 30  # the largest official file (an ARC run's puzzle table) is ~2 GB
REQUIRED = ("all_config.yaml",)
OPTIONAL = ("identifiers.json", "dataset.json")
_STEP = re.compile(r"step_(\d+)")
_NAME = r"[A-Za-z0-9][\w.-]*"
_REFERENCE = re.compile(rf"({_NAME}/{_NAME})((?:/{_NAME})*)(?:@([\w.-]+(?:/[\w.-]+)*))?")
_FORM = "hf://OWNER/REPO[/FOLDER][@REVISION]"


@dataclass(frozen=True)
class Reference:
    repo: str
    folder: str  # "" for the repository's root
    revision: str


def is_reference(text: object) -> bool:
    return isinstance(text, str) and text.startswith(PREFIX)


def parse(text: str) -> Reference:
    m = _REFERENCE.fullmatch(text[len(PREFIX):])
    if not m or ".." in text:
        raise TRMEdgeError(f"{text}: not a hub reference; write {_FORM}")
    return Reference(m[1], m[2].strip("/"), m[3] or "main")


def resolve(source: str | None) -> str | None:
    """The local run folder an `hf://` reference names, fetched first where the cache lacks it; any other source (a
    path, None) unchanged."""
    if not is_reference(source):
        return source
    ref = parse(source)
    require(source, "hub", "huggingface_hub")
    require(f"{source} (a model, run on the PyTorch reference)", "export", "torch")  # before gigabytes, not after
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{ref.repo}@{ref.revision}" + (f" folder {ref.folder}" if ref.folder else "")
    try:
        try:  # one request, not retried: without a network the cache answers at once
            listed = HfApi().model_info(ref.repo, revision=ref.revision, files_metadata=True)
        except (RepositoryNotFoundError, RevisionNotFoundError):
            raise
        except Exception as e:  # offline, no network, the hub down (its HTTP client's errors): the cache may answer
            return _from_cache(ref, source, e)
        paths = [hf_hub_download(ref.repo, name, subfolder=ref.folder or None, revision=ref.revision)
                 for name in _wanted(_folder(listed.siblings or [], ref, source), source, where)]
    except RepositoryNotFoundError:
        raise TRMEdgeError(f"{source}: no such model repository {ref.repo} on the hub (or it is private or gated: "
                           "log in with `hf auth login`)") from None
    except RevisionNotFoundError:
        raise TRMEdgeError(f"{source}: {ref.repo} has no revision {ref.revision}") from None
    except LocalEntryNotFoundError as e:  # the connection went between the listing and a file
        raise TRMEdgeError(f"{source}: not in the cache and the hub is unreachable: {_first_line(e)}") from None
    except EntryNotFoundError:
        raise TRMEdgeError(f"{source}: a file of {where} went from the hub during the download; run again") from None
    except TRMEdgeError:
        raise
    except Exception as e:  # the hub's HTTP client's errors: one line, not a traceback
        raise TRMEdgeError(f"{source}: download failed: {_first_line(e)}") from None
    folders = {str(Path(p).parent) for p in paths}
    if len(folders) > 1:  # a branch moved between two files: they belong to different commits
        raise TRMEdgeError(f"{source}: {ref.revision} changed during the download; run again, or pin a commit (@SHA)")
    return folders.pop()


def _folder(siblings: list, ref: Reference, source: str) -> dict[str, int]:
    """{name: bytes} of the files directly in the reference's folder, from the repository's file list."""
    prefix = ref.folder + "/" if ref.folder else ""
    inside = [s for s in siblings if s.rfilename.startswith(prefix)]
    if not inside:
        raise TRMEdgeError(f"{source}: {ref.repo}@{ref.revision} has no folder {ref.folder or '(an empty repository)'}")
    return {s.rfilename[len(prefix):]: s.lfs.size if s.lfs else s.size or 0 for s in inside
            if "/" not in s.rfilename[len(prefix):]}


def _wanted(sizes: dict[str, int], source: str, where: str) -> list[str]:
    """The files a load reads, from the folder's listing: refused before any download when one is missing or too
    large."""
    steps = sorted((int(m[1]), name) for name in sizes if (m := _STEP.fullmatch(name)))
    if not steps:
        raise TRMEdgeError(f"{source}: no step_N checkpoint in {where}; name a run's folder ({_FORM})")
    if missing := [n for n in REQUIRED if n not in sizes]:
        raise TRMEdgeError(f"{source}: {where} has {steps[-1][1]} but no {missing[0]}; not an official run "
                           "folder")
    wanted = [steps[-1][1], *REQUIRED, *(n for n in OPTIONAL if n in sizes)]
    for name in wanted:
        if (sizes[name]) > MAX_FILE_BYTES:
            raise TRMEdgeError(f"{source}: {name} is {sizes[name] / 1e9:.1f} GB, over the {MAX_FILE_BYTES >> 30} GiB "
                               "a model file may have; download it yourself if you trust it")
    return wanted


def _from_cache(ref: Reference, source: str, why: Exception) -> str:
    """The cached run folder, when the hub cannot answer: the cached commit of the revision, its highest step."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        config = hf_hub_download(ref.repo, REQUIRED[0], subfolder=ref.folder or None, revision=ref.revision,
                                 local_files_only=True)
    except (EntryNotFoundError, OSError, ValueError):  # not cached (ValueError: older huggingface_hub)
        config = None
    run = Path(config).parent if config else None
    if run is None or not any(_STEP.fullmatch(f.name) and f.is_file() for f in run.iterdir()):
        raise TRMEdgeError(f"{source}: not in the cache and the hub is unreachable: {_first_line(why)}")
    return str(run)


def origin(path: str | os.PathLike) -> str | None:
    """`hf://OWNER/REPO/FOLDER@COMMIT` for a file or folder inside huggingface_hub's cache (its layout:
    models--OWNER--REPO/snapshots/COMMIT/...), else None: what a model fetched from the hub records as its source."""
    p = Path(path)
    parts = (p.parent if p.is_file() else p).parts
    for i in range(len(parts) - 2):
        owner_repo = parts[i].removeprefix("models--").split("--")  # the hub allows no "--" in a name
        if parts[i].startswith("models--") and parts[i + 1] == "snapshots" and len(owner_repo) == 2:
            return f"{PREFIX}{'/'.join([*owner_repo, *parts[i + 3:]])}@{parts[i + 2]}"
    return None


CARD = "README.md"


def push(bundle: str | os.PathLike, target: str, private: bool = False, message: str | None = None) -> dict:
    """Publish a bundle at `target` (hf://OWNER/REPO[/FOLDER]) in one commit: the files its manifest lists, the
    manifest, and a model card made from it (FOLDER/README.md: a push into a folder leaves the repository's own
    README alone). The bundle is verified first, so only what an export wrote and checked is published, and nothing
    else lying in its folder. A missing repository is created (`private`: as a private one). A @REVISION is refused:
    a push goes to the main branch, which `hf download` reads by default."""
    if not is_reference(target):
        raise TRMEdgeError(f"{target}: not a hub reference; push to hf://OWNER/REPO[/FOLDER]")
    ref = parse(target)
    if "@" in target:
        raise TRMEdgeError(f"{target}: a push goes to the main branch; drop @{ref.revision}")
    require(f"push {target}", "hub", "huggingface_hub")
    from trm_edge.api import bundle_summary
    from trm_edge.bundle import MANIFEST, Bundle

    b = Bundle(bundle)  # every file's size and sha256 checked: an edited or corrupt bundle stops here
    card = model_card(dict(bundle_summary(b), source=b.manifest.get("source")), ref.repo, ref.folder)
    from huggingface_hub import CommitOperationAdd, HfApi

    into = ref.folder + "/" if ref.folder else ""
    ops = [CommitOperationAdd(into + name, str(b.path / name)) for name in [*b.manifest["files"], MANIFEST]]
    ops.append(CommitOperationAdd(into + CARD, card.encode()))
    api = HfApi()
    try:
        api.create_repo(ref.repo, exist_ok=True, private=private or None)  # None: the owner's default visibility
        done = api.create_commit(ref.repo, ops, commit_message=message or f"trm-edge push: a {b.task} bundle"
                                 + (f" in {ref.folder}" if ref.folder else ""))
    except Exception as e:  # the hub's HTTP client's errors: one line, not a traceback
        raise _push_error(e, target, ref.repo) from None
    return {"url": done.commit_url, "commit": done.oid, "repo": ref.repo, "folder": ref.folder, "files": len(ops),
            "bytes": sum(op.upload_info.size for op in ops)}


def _push_error(e: Exception, target: str, repo: str) -> TRMEdgeError:
    """What a push meets, said in one line with what to do: credentials, permissions, a name the hub refuses, no
    network."""
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled

    status = e.response.status_code if isinstance(e, HfHubHTTPError) else None
    login = "log in with `hf auth login`, or set HF_TOKEN to a token with write access"
    # a transport error: httpx's TransportError (not an OSError), or an OSError from requests or the OS
    transport = status is None and (isinstance(e, OSError) or any(c.__name__ == "TransportError"
                                                                  for c in type(e).__mro__))
    if status == 401:
        why = f"the hub did not accept your credentials (not logged in, or the token is invalid): {login}"
    elif status == 403:
        why = f"not allowed to write to {repo} (a read-only token, or another owner's namespace): {login}"
    elif isinstance(e, HFValidationError):
        why = f"{repo} is not a valid repository name: {_first_line(e)}"
    elif isinstance(e, OfflineModeIsEnabled):
        why = "HF_HUB_OFFLINE is set: unset it to push"
    elif transport:
        why = f"the hub is unreachable ({_first_line(e)}); check the network, or HF_ENDPOINT"
    else:
        why = f"push failed: {getattr(e, 'server_message', None) or _first_line(e)}"
    return TRMEdgeError(f"{target}: {why}")


def model_card(summary: dict, repo: str = "OWNER/REPO", folder: str = "") -> str:
    """The README.md a pushed bundle carries, every figure from its manifest (`summary`: api.bundle_summary's, with
    the manifest's `source`): the model, its files, how each engine's graphs were verified and how each int8 route
    passed its guard, and how to download and run it. No license is written: a manifest does not know one."""
    import yaml

    from trm_edge.config import FAMILY_NAMES

    formats = list(dict.fromkeys(r["format"] for r in summary["graphs"]))
    family = summary["config"].get("family", "trm")  # a TRM config leaves it out
    name = FAMILY_NAMES[family]
    front = {"library_name": "trm-edge",
             "tags": [family, name.lower().replace(" ", "-"), "onnx", summary["task"],
                      *(f for f in formats if f != "onnx")]}
    return "\n".join(["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
                      f"# A {name} for {summary['task']}, exported by trm-edge", "",
                      f"A trm-edge bundle: the model's recursion as graphs for {', '.join(formats)}, the fp32 ones "
                      "verified against the PyTorch reference before the bundle was written and any int8 one held to "
                      "an accuracy guard. `manifest.json` holds every file's sha256, and trm-edge checks them all "
                      "when it opens the bundle.",
                      *_card_model(summary), *_card_checks(summary), *_card_use(summary, repo, folder), ""])


def _card_model(summary: dict) -> list[str]:
    """The model (its parameters counted from its config, as `info` does without torch) and its files."""
    from trm_edge.config import FAMILY_NAMES, TRMConfig

    cfg, source = TRMConfig.from_dict(summary["config"]), summary.get("source")
    rows = cfg.num_puzzle_identifiers if cfg.puzzle_emb_ndim else 0
    layers = f"{cfg.H_layers} H + {cfg.L_layers} L" if cfg.family == "hrm" else f"{cfg.L_layers}"
    return [
        "", "## Model", "", "| | |", "|---|---|", f"| task | {summary['task']} |",
        f"| parameters | {cfg.param_count():,}" + (f", besides a puzzle-embedding table of {rows:,} rows × "
                                                   f"{cfg.puzzle_emb_ndim}" if rows > 1 else "") + " |",
        f"| family | {cfg.family.upper()} ({FAMILY_NAMES[cfg.family]}) |",
        f"| hidden size | {cfg.hidden_size} |",
        f"| layers | {layers}, mixing tokens by " + ("an MLP across the sequence |" if cfg.mlp_t else
                                                           f"attention ({cfg.num_heads} heads) |"),
        f"| cycles | {cfg.H_cycles} H × {cfg.L_cycles} L per supervision step, at most {cfg.halt_max_steps} steps |",
        f"| sequence | {cfg.seq_len} tokens of {cfg.vocab_size} values, after {cfg.prefix_len} puzzle-embedding "
        "positions |",
        f"| halting | `{summary['halting']}` (recommended) |",
        *([f"| exported from | `{source}` |"] if is_reference(source) else []),
        "", "## Files", "", "| format | graph | precision | file | MB |", "|---|---|---|---|---:|",
        *(f"| {r['format']} | {r['graph']} | {r['precision']} | `{r['file']}` | {r['mb']:.2f} |"
          for r in summary["graphs"])]


def _card_checks(summary: dict) -> list[str]:
    """Each format's verification against the PyTorch reference, and each int8 route's guard figures."""
    lines = ["", "## Verification", ""]
    for fmt, v in summary["verification"].items():
        if v:
            runs = [e["answers_identical"] for forms in v.get("policies", {}).values() for e in forms.values()]
            forms = dict.fromkeys(r["graph"] for r in summary["graphs"] if r["format"] == fmt)
            lines.append(f"- {fmt}: the {', '.join(forms)} graphs against the PyTorch reference on {v['puzzles']} "
                         f"puzzles under {', '.join(f'`{p}`' for p in v.get('policies', {}))}: passed"
                         + (f" (answers identical: {min(runs):.1%}, the lowest of any graph and policy)"
                            if runs else ""))
    if not (quantized := summary["quantization"]):
        return lines
    lines += ["", "## int8", "", "An int8 graph ships only where its exact-solve rate holds within the budget of "
              "fp32's on held-out puzzles (paired answers; the interval is the one the guard decided by).", "",
              "| format and mode | route | held-out puzzles | exact fp32 → int8 | drop (pp) | interval (pp) | "
              "budget (pp) | step speed vs fp32, batch 1 |", "|---|---|---:|---|---:|---|---:|---:|"]
    for name, q in quantized.items():
        g = q["guard"]
        lo, hi = g["decision_interval_pp"]
        lines.append(f"| {name} | {q.get('route', '')} | {q['heldout_puzzles']:,} | {g['fp32_exact']:.1%} → "
                     f"{g['int8_exact']:.1%} | {g['exact_drop_pp']:+.2f} | [{lo:g}, {hi:g}] | {q['max_drop_pp']:g} | "
                     f"{q['speed']['speedup']:.2f}× |")
    warned = [w for q in quantized.values() for w in q.get("warnings", [])]
    return lines + (["", *(f"- {w}" for w in warned)] if warned else [])


def _card_use(summary: dict, repo: str, folder: str) -> list[str]:
    """The export's notes, and how to download the bundle and run each of its routes (a bundle is opened from a
    folder: `hf://` names runs, not bundles)."""
    routes: dict[tuple[str, str], list[str]] = {}  # (--backend, --precision): its graphs (solve runs step's)
    for r in summary["graphs"]:
        routes.setdefault(("ort" if r["format"] == "onnx" else r["format"], r["precision"]), []).append(r["graph"])
    where, local = (f" --include '{folder}/*'", f"DIR/{folder}") if folder else ("", "DIR")
    arc = summary.get("arc_tasks")
    what = (f"this ARC bundle carries {len(arc)} tasks; a TASK.json is solved under each variant the bundle carries "
            "for it, and the answers voted on" if arc else "a PUZZLE is a puzzle string, a file with one a line, or -")
    return [*(["", "## Notes", "", *(f"- {n}" for n in summary["notes"])] if summary["notes"] else []),
            "", "## Use", "", f"Download the bundle, then solve with it: {what}.", "", "```bash",
            f'pip install "trm-edge[{",".join(dict.fromkeys(e for e, _ in routes))},hub]"',
            f"hf download {repo}{where} --local-dir DIR",
            *(f"trm-edge solve {local} {'TASK.json' if arc else 'PUZZLE'} --backend {e}"
              + (f" --precision {p}" if p != "fp32" else "") + ("" if "step" in g else f" --graph {g[0]}")
              for (e, p), g in routes.items()),
            f"trm-edge info {local}", "```"]


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
