"""All-or-nothing directory writes: a bundle or model appears whole or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def atomic_dir(out_dir: str | os.PathLike, write) -> Path:
    """Run `write(tmp)` in a temporary sibling directory and rename it into place: all or nothing."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
