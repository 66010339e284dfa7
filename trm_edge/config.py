"""TRMConfig: the architecture, with the official field names, and where each field comes from.

Torch-free on purpose: a device reads configs from bundle manifests without torch installed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trm_edge.errors import TRMEdgeError
from trm_edge.untrusted import load_json, read_limited

FORWARD_DTYPES = ("float32", "bfloat16")
FAMILY_NAMES = {"trm": "Tiny Recursive Model", "hrm": "Hierarchical Reasoning Model"}
FAMILIES = tuple(FAMILY_NAMES)
# Left out of a TRM config's dict (TRM's values are their defaults), so TRM manifests and bundles stay as they were.
_HRM_ONLY = ("family", "H_layers")


def _find_multiple(a: int, b: int) -> int:
    return -(a // -b) * b


@dataclass(frozen=True)
class TRMConfig:
    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int = 1
    hidden_size: int = 512
    num_heads: int = 8
    expansion: float = 4.0
    L_layers: int = 2
    H_cycles: int = 3
    L_cycles: int = 6
    halt_max_steps: int = 16
    halt_exploration_prob: float = 0.1
    puzzle_emb_len: int = 16
    puzzle_emb_ndim: int = 512
    pos_encodings: str = "rope"
    mlp_t: bool = False
    forward_dtype: str = "bfloat16"
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    # "trm": one L_level stack updates both z_L and z_H. "hrm": an H_level stack of H_layers updates z_H, and the
    # puzzle-embedding prefix is always ceil(puzzle_emb_ndim / hidden_size) slots (puzzle_emb_len 0: HRM has none).
    family: str = "trm"
    H_layers: int = 0

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise TRMEdgeError(f"config: family {self.family!r} is not one of {FAMILIES}")
        if (self.family == "hrm") != (self.H_layers > 0):
            raise TRMEdgeError(f"config: H_layers {self.H_layers} for family {self.family}; HRM needs >= 1, "
                               "TRM has no H_level (0)")
        if self.family == "hrm" and self.puzzle_emb_len:
            raise TRMEdgeError(f"config: puzzle_emb_len {self.puzzle_emb_len} for HRM, whose puzzle prefix is always "
                               "ceil(puzzle_emb_ndim / hidden_size) slots: give 0")
        if self.forward_dtype not in FORWARD_DTYPES:
            raise TRMEdgeError(f"config: forward_dtype {self.forward_dtype!r} is not one of {FORWARD_DTYPES}")
        if self.pos_encodings not in ("rope", "none", "learned"):
            raise TRMEdgeError(f"config: pos_encodings {self.pos_encodings!r} is not rope, none or learned")
        if not self.mlp_t and self.hidden_size % self.num_heads:
            raise TRMEdgeError(f"config: hidden_size {self.hidden_size} is not divisible by num_heads "
                               f"{self.num_heads}")
        if self.puzzle_emb_ndim == 0 and self.prefix_len:  # the official code fails on it (prefix vs. carry shape)
            raise TRMEdgeError(f"config: puzzle_emb_len {self.puzzle_emb_len} with puzzle_emb_ndim 0: no puzzle "
                               "embedding fills the prefix (give puzzle_emb_len 0)")
        if self.puzzle_emb_ndim > self.prefix_len * self.hidden_size:
            raise TRMEdgeError("config: puzzle_emb_ndim does not fit in puzzle_emb_len slots of hidden_size")
        for name in ("vocab_size", "seq_len", "hidden_size", "L_layers", "H_cycles", "L_cycles",
                     "halt_max_steps", "num_puzzle_identifiers"):
            if getattr(self, name) < 1:
                raise TRMEdgeError(f"config: {name} must be >= 1, got {getattr(self, name)}")

    # -- derived sizes (the official code derives them the same way) --
    @property
    def prefix_len(self) -> int:
        """Puzzle-embedding slots before the tokens; 0 in the official config means 'as many as needed'."""
        if self.puzzle_emb_len == 0:
            return -(self.puzzle_emb_ndim // -self.hidden_size)
        return self.puzzle_emb_len

    @property
    def total_len(self) -> int:
        return self.seq_len + self.prefix_len

    @property
    def z_H_layers(self) -> int:
        """Layers of the stack that updates z_H: HRM's own H_level, TRM's shared L_level."""
        return self.H_layers if self.family == "hrm" else self.L_layers

    def swiglu_inter(self, width: int) -> int:
        return _find_multiple(round(self.expansion * width * 2 / 3), 256)

    # -- counts --
    def param_count(self) -> int:
        """nn.Parameter count as the official code reports it (puzzle table and init vectors excluded)."""
        D, V = self.hidden_size, self.vocab_size
        channel = 3 * D * self.swiglu_inter(D)
        if self.mlp_t:
            mixer = 3 * self.total_len * self.swiglu_inter(self.total_len)
        else:
            mixer = 3 * D * D + D * D
        return V * D * 2 + 2 * D + 2 + (self.L_layers + self.H_layers) * (channel + mixer)

    def flops_per_step(self) -> int:
        """Forward FLOPs of one supervision step at batch 1 (a multiply-add counts as 2)."""
        D, S = self.hidden_size, self.total_len
        block = 2 * S * 3 * D * self.swiglu_inter(D)
        if self.mlp_t:
            block += 2 * D * 3 * S * self.swiglu_inter(S)
        else:
            block += 2 * S * 4 * D * D + 4 * S * S * D
        blocks = self.H_cycles * (self.L_cycles * self.L_layers + self.z_H_layers)
        return blocks * block + 2 * S * D * self.vocab_size + 2 * D * 2

    # -- serialisation --
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["family"] == "trm":
            d = {k: v for k, v in d.items() if k not in _HRM_ONLY}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TRMConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TRMEdgeError(f"config: unknown field(s) {', '.join(unknown)}; is this a trm-edge config?")
        try:
            return cls(**d)
        except TypeError as e:
            raise TRMEdgeError(f"config: {e}") from None


# Official arch fields we take from all_config.yaml (the rest comes from the weights or dataset.json).
_ARCH_FIELDS = ("hidden_size", "num_heads", "expansion", "H_layers", "L_layers", "H_cycles", "L_cycles",
                "halt_max_steps", "halt_exploration_prob", "puzzle_emb_len", "puzzle_emb_ndim", "pos_encodings",
                "mlp_t", "forward_dtype", "rms_norm_eps", "rope_theta")


def _official_config(run_dir: Path) -> dict[str, Any]:
    """An official run's all_config.yaml."""
    import yaml

    path = run_dir / "all_config.yaml"
    if not path.is_file():
        raise TRMEdgeError(f"{run_dir}: no all_config.yaml beside the checkpoint; the official trainer writes "
                           "it, copy it from the training run")
    text = read_limited(path, 1 << 20, "official config")  # ours are 2 kB
    try:
        doc = yaml.safe_load(text)
        assert isinstance(doc["arch"], dict)
    except Exception:
        raise TRMEdgeError(f"{path}: not an official config (no 'arch:' mapping)") from None
    return doc


def read_official_arch(run_dir: Path) -> dict[str, Any]:
    """The `arch:` section of an official run's all_config.yaml."""
    arch = _official_config(run_dir)["arch"]
    return {k: arch[k] for k in _ARCH_FIELDS if k in arch}


def official_dataset(run_dir: Path, holding: str) -> Path | None:
    """The first dataset of an official run's `data_paths` (HRM's: `data_path`) that holds `holding`: a relative path
    is looked for where the trainer ran (the run directory or one above it, usually the repository), then here."""
    doc = _official_config(run_dir)
    paths = doc.get("data_paths") or doc.get("data_path") or []
    for d in paths if isinstance(paths, list) else [paths]:
        if not isinstance(d, str):
            continue
        bases = [Path()] if Path(d).is_absolute() else [run_dir, *run_dir.resolve().parents, Path.cwd()]
        for base in bases:
            if (base / d / holding).is_file():
                return base / d
    return None


def run_dataset(run_dir: Path) -> Path | None:
    """The dataset an official run trained on, where its data_paths say (None if not there): a task trm-edge does not
    know draws its verification and guard puzzles from the test split."""
    return official_dataset(run_dir, "test/dataset.json") if (run_dir / "all_config.yaml").is_file() else None


def find_dataset_seq_len(start: Path) -> int | None:
    """seq_len from a dataset.json beside or above the checkpoint (the official builders write one), else from the
    run's dataset (data_paths)."""
    def places():
        yield from (start, *start.parents)
        if run := run_dataset(start):  # the run's config is read only when nothing lies beside or above
            yield run

    for d in places():
        for cand in (d / "dataset.json", d / "test" / "dataset.json", d / "train" / "dataset.json"):
            if cand.is_file():
                try:
                    return int(load_json(cand, "dataset.json")["seq_len"])
                except (ValueError, KeyError, TypeError):
                    raise TRMEdgeError(f"{cand}: unreadable dataset.json (no integer seq_len)") from None
    return None
