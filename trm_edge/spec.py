"""The single table of graph inputs and outputs, shared by the exporter, the runtimes, the tests and the
Android sample. Dimensions are names resolved against a TRMConfig (and "batch", left dynamic)."""

from __future__ import annotations

from trm_edge.config import TRMConfig

CARRY = ["batch", "total_len", "hidden_size"]
POLICY_INPUTS = [  # the halting policy, fed at every call (see HaltPolicy.graph_inputs)
    ("halt_threshold", "float32", []),
    ("min_steps", "int64", []),
    ("max_steps", "int64", []),
]
SPEC = {
    "step": {
        "inputs": [("tokens", "int64", ["batch", "seq_len"]), ("puzzle_ids", "int64", ["batch"]),
                   ("z_H", "float32", CARRY), ("z_L", "float32", CARRY)],
        "outputs": [("z_H_out", "float32", CARRY), ("z_L_out", "float32", CARRY),
                    ("pred", "int64", ["batch", "seq_len"]), ("q_halt", "float32", ["batch"]),
                    ("logits", "float32", ["batch", "seq_len", "vocab_size"])],
    },
    "loop": {
        "inputs": [("tokens", "int64", ["batch", "seq_len"]), ("puzzle_ids", "int64", ["batch"]), *POLICY_INPUTS],
        "outputs": [("pred", "int64", ["batch", "seq_len"]), ("steps", "int64", ["batch"]),
                    ("q_halt", "float32", ["batch"]), ("fault", "int64", ["batch"])],
    },
}
SPEC["unrolled"] = SPEC["loop"]
GRAPHS = tuple(SPEC)


def io_spec(graph: str, config: TRMConfig, batch: int | None = None) -> dict:
    """Names, dtypes and shapes of one graph form with the config's sizes filled in."""
    sizes = {"seq_len": config.seq_len, "total_len": config.total_len, "hidden_size": config.hidden_size,
             "vocab_size": config.vocab_size, "batch": batch if batch else "batch"}
    return {side: [{"name": n, "dtype": t, "shape": [sizes[d] for d in dims]} for n, t, dims in SPEC[graph][side]]
            for side in ("inputs", "outputs")}
