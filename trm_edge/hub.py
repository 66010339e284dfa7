"""Models on the Hugging Face Hub: `hf://OWNER/REPO[/FOLDER][@REVISION]` names an official run folder there (a
`step_N` and its `all_config.yaml`). Only what a load needs is fetched: the folder's highest `step_N`,
`all_config.yaml`, and `identifiers.json` / `dataset.json` where the folder has them, into huggingface_hub's own cache,
which answers alone when the hub cannot be reached (HF_HUB_OFFLINE=1, no network)."""

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


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
