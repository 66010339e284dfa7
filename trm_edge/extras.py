"""Optional dependencies (pyproject's extras): a device installs numpy and one engine, so work that needs more says,
in one line and before it starts, what is missing and which extra installs it; never a traceback after minutes."""

from __future__ import annotations

import importlib.util

from trm_edge.errors import TRMEdgeError


def installed(module: str) -> bool:
    """Whether `module` can be imported, found without importing it (importing torch takes seconds)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install, or one hidden from this process
        return False


def missing_error(what: str, missing: str, extra: str) -> TRMEdgeError:
    """The one line for every missing optional dependency: what needs it, and the extra that installs it."""
    return TRMEdgeError(f"{what} needs {missing}: pip install 'trm-edge[{extra}]'")


def require(what: str, extra: str, *modules: str) -> None:
    """Refuse `what` unless every one of `modules` is installed; call it before the first import of them."""
    if absent := [m for m in modules if not installed(m)]:
        raise missing_error(what, ", ".join(absent), extra)
