"""The PyTorch reference behind the step-graph interface (the only runtime module that imports torch)."""

from __future__ import annotations

import numpy as np
import torch

from trm_edge.model import TRM, StepModule
from trm_edge.spec import io_spec


class TorchAdapter:
    name = "torch"

    def __init__(self, model: TRM, threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.model, self.threads = model.eval(), threads
        self.step = StepModule(self.model).eval()

    @torch.inference_mode()
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.step(**{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()})
        return {k: v.numpy() for k, v in out.items()}

    def io(self) -> dict[str, list]:
        """The reference's own shapes: its weights were checked against the config when it was loaded."""
        spec = io_spec("step", self.model.config)
        return {t["name"]: t["shape"] for side in spec.values() for t in side}

    def describe(self) -> dict:
        return {"backend": "torch", "version": torch.__version__, "threads": self.threads or torch.get_num_threads(),
                "graph": "reference"}
