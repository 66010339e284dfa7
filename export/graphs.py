"""The three ONNX forms of a TRM, all built from one exported supervision step.

`step` comes from torch.onnx's dynamo exporter. `loop` and `unrolled` are assembled around that step
graph by graph surgery rather than re-exported, for two reasons: the weights stay shared (one copy of
each initializer, referenced from the Loop body or from every unrolled step), and an int8 step graph can
be wrapped the same way (no quantizer enters Loop bodies). Halting is one small block of nodes used by
both: a row stops when k >= max_steps or (q_halt > halt_threshold and k >= min_steps); a stopped row's
answer, step count and q_halt are frozen by masking.

Opset 18: the newest opset that ONNX Runtime >= 1.14 (incl. mobile builds), OpenVINO 2023+ and the
TFLite converters all read; nothing newer is needed. RMSNorm and SwiGLU stay primitive ops, rewritten after
export into the forms ORT's optimizer fuses or runs without copies (1.14x per fp32 step at batch 1, measured).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections import Counter

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from trm_edge.export.options import DEFAULT_OPSET
from trm_edge.model import STEP_OUTPUTS, TRM, StepModule
from trm_edge.spec import SPEC

_OUTER = {"tokens": "tokens", "puzzle_ids": "puzzle_ids"}  # step inputs the loop and unrolled graphs pass through
_DT = {"int64": TensorProto.INT64, "float32": TensorProto.FLOAT, "bool": TensorProto.BOOL}


def export_step(model: TRM, opset: int = DEFAULT_OPSET, batch: int | None = None) -> onnx.ModelProto:
    """One supervision step; `batch=None` gives a dynamic batch dimension."""
    if model.config.forward_dtype != "float32":
        raise ValueError("export runs the model in float32; load it with dtype='float32'")
    B = batch or 2
    carry = model.initial_carry(B)
    args = (torch.ones(B, model.config.seq_len, dtype=torch.long), torch.zeros(B, dtype=torch.long), *carry)
    names = [n for n, _, _ in SPEC["step"]["inputs"]]
    dyn = None
    if batch is None:
        dim = torch.export.Dim("batch", min=1, max=4096)
        dyn = {n: {0: dim} for n in names}
    with torch.no_grad(), _benign_export_warnings_silenced():
        prog = torch.onnx.export(StepModule(model).eval(), args, dynamo=True, opset_version=opset, input_names=names,
                                 output_names=list(STEP_OUTPUTS), dynamic_shapes=dyn,
                                 optimize=True, verbose=False)
    proto = prog.model_proto
    _name_batch_dim(proto)
    _fold_weight_transposes(proto)
    _split_gate_up(proto)
    _rms_norm_as_fusable(proto)
    return proto


@contextlib.contextmanager
def _benign_export_warnings_silenced():
    """The dynamo exporter's known-benign chatter: torchvision ops it skips (we use none), pytree's LeafSpec
    deprecation, and the note that our one dynamic dimension 'batch' is shared by every input."""
    log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r".*axis name: batch will not be used")
            yield
    finally:
        log.setLevel(level)


def _fold_weight_transposes(proto: onnx.ModelProto) -> None:
    """Store each Linear weight pre-transposed instead of behind a Transpose node: ORT's quantizers only
    quantize a MatMul whose weight is an initializer (behind a Transpose, static QDQ quantizes it per tensor
    as if it were an activation, and dynamic skips the MatMul), and converters need no folding pass."""
    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    folded, edits = {}, {}
    for node in g.node:
        if node.op_type == "Transpose" and node.input[0] in inits:
            perm = next(a.ints for a in node.attribute if a.name == "perm")
            w = numpy_helper.to_array(inits[node.input[0]]).transpose(perm)
            folded[node.output[0]] = numpy_helper.from_array(np.ascontiguousarray(w), node.input[0] + ".T")
            edits[node.name] = []
    for n in g.node:
        n.input[:] = [folded[i].name if i in folded else i for i in n.input]
    g.initializer.extend(folded.values())
    _apply(g, edits)


def _split_gate_up(proto: onnx.ModelProto) -> None:
    """SwiGLU's `gate_up(h).chunk(2)` as two MatMuls on the weight's halves: the Split copied the whole
    2×inter activation on every call (12.5% of the fp32 step in ORT's profile). Same FLOPs, same results."""
    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    rank = {k: len(v) for k, v in _shapes(g).items()}
    producer = {o: n for n in g.node for o in n.output}
    uses = Counter(i for n in g.node for i in n.input)
    halves: dict[str, list[str]] = {}
    edits: dict[str, list] = {}
    for split in g.node:
        mm = producer.get(split.input[0]) if split.op_type == "Split" else None
        if mm is None or mm.op_type != "MatMul" or mm.input[1] not in inits or uses[mm.output[0]] != 1:
            continue
        w = numpy_helper.to_array(inits[mm.input[1]])
        axis = next((a.i for a in split.attribute if a.name == "axis"), 0)
        if len(split.input) > 1 or len(split.output) != 2 or w.shape[-1] % 2 or \
                axis not in (-1, rank.get(mm.output[0], 0) - 1):
            continue
        if mm.input[1] not in halves:
            halves[mm.input[1]] = [f"{mm.input[1]}.{part}" for part in ("gate", "up")]
            for name, half in zip(halves[mm.input[1]], np.split(w, 2, axis=-1)):
                g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(half), name))
        edits[mm.name] = []
        edits[split.name] = []
        for out, w_half in zip(split.output, halves[mm.input[1]]):
            new = helper.make_node("MatMul", [mm.input[0], w_half], [out], name=f"{mm.name}.{out}")
            new.metadata_props.extend(mm.metadata_props)  # keeps the module scope (int8 defaults, sensitivity)
            edits[split.name].append(new)
    _apply(g, edits)


def _rms_norm_as_fusable(proto: onnx.ModelProto) -> None:
    """`x * Reciprocal(Sqrt(.))` as `Div(x, Sqrt(.)) * ones`: the form ORT's SimplifiedLayerNormFusion matches
    (it wants a Div and a scale; this RMSNorm has no weight), one fused kernel instead of six ops."""
    g = proto.graph
    shapes = _shapes(g)
    producer = {o: n for n in g.node for o in n.output}
    users: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    ones: dict[int, str] = {}
    edits: dict[str, list] = {}
    for rec in g.node:
        sqrt = producer.get(rec.input[0]) if rec.op_type == "Reciprocal" else None
        after = users.get(rec.output[0], [])
        if sqrt is None or sqrt.op_type != "Sqrt" or len(after) != 1 or after[0].op_type != "Mul":
            continue
        mul = after[0]
        x = mul.input[0] if mul.input[1] == rec.output[0] else mul.input[1]
        width = (shapes.get(x) or [0])[-1]
        if not isinstance(width, int) or width < 1:
            continue
        if width not in ones:
            ones[width] = f"rms_norm.ones{width}"
            g.initializer.append(numpy_helper.from_array(np.ones(width, np.float32), ones[width]))
        div = helper.make_node("Div", [x, sqrt.output[0]], [mul.output[0] + ".div"], name=mul.name + ".div")
        edits[rec.name] = []
        edits[mul.name] = [div, helper.make_node("Mul", [div.output[0], ones[width]], [mul.output[0]], name=mul.name)]
    _apply(g, edits)


def _shapes(g: onnx.GraphProto) -> dict[str, list]:
    """Tensor shapes the exporter recorded (dims as ints, or names for dynamic ones)."""
    return {v.name: [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]
            for v in [*g.value_info, *g.input, *g.output]}


def _apply(g: onnx.GraphProto, edits: dict[str, list]) -> None:
    """Replace each named node by its list of new nodes (in place: order stays topological), then drop
    initializers nothing reads any more."""
    nodes = [new for n in g.node for new in (edits.get(n.name, [n]) if n.name else [n])]
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    kept = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)


def _name_batch_dim(proto: onnx.ModelProto) -> None:
    """Whatever the exporter called it, the dynamic batch dimension is named 'batch' on every graph I/O."""
    for v in [*proto.graph.input, *proto.graph.output]:
        dims = v.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            dims[0].dim_param = "batch"


def _value(name: str, dtype: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, _DT[dtype], shape)


def _inline_step(step: onnx.ModelProto, prefix: str, feeds: dict[str, str]) -> tuple[list, dict[str, str]]:
    """The step's nodes with every internal name prefixed; `feeds` maps its inputs to outer names.
    Initializers keep their names (they live once, in the outer graph). Returns nodes and output names."""
    g = step.graph
    keep = {i.name for i in g.initializer}
    rename = dict(feeds)

    def r(n: str) -> str:
        if not n or n in keep:
            return n
        return rename.setdefault(n, prefix + n)

    nodes = []
    for node in g.node:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        new.name = prefix + (node.name or node.op_type)
        new.input[:] = [r(n) for n in node.input]
        new.output[:] = [r(n) for n in node.output]
        nodes.append(new)
    return nodes, {o.name: r(o.name) for o in g.output}


def _halting(prefix: str, k: str, state: dict[str, str], out: dict[str, str]) -> tuple[list, dict[str, str]]:
    """Freeze halted rows, then decide which rows halt at step k (int64 scalar). A running row whose step
    produced NaN or Inf stops, its fault set to k. (Finiteness is tested on per-row sums, which are NaN or Inf
    whenever a term is; the carry is RMS-normalised, so a finite sum never overflows.)"""
    p = prefix
    n = helper.make_node
    running, pred, steps, q_last, fault = (state[x] for x in ("running", "pred", "steps", "q", "fault"))
    new_pred, new_q = out["pred"], out["q_halt"]
    nodes = [
        n("Shape", [running], [p + "batch_shape"]),
        n("Unsqueeze", [running, "axes_1"], [p + "running_col"]),
        n("Where", [p + "running_col", new_pred, pred], [p + "pred"]),
        n("Expand", [k, p + "batch_shape"], [p + "k_rows"]),
        n("Where", [running, p + "k_rows", steps], [p + "steps"]),
        n("Where", [running, new_q, q_last], [p + "q"]),
        n("GreaterOrEqual", [k, "max_steps"], [p + "at_max"]),
        n("Greater", [new_q, "halt_threshold"], [p + "q_says_halt"]),
        n("GreaterOrEqual", [k, "min_steps"], [p + "past_min"]),
        n("And", [p + "q_says_halt", p + "past_min"], [p + "learned_halt"]),
        n("Or", [p + "learned_halt", p + "at_max"], [p + "halt"]),
        n("Not", [p + "halt"], [p + "go_on"]),
        *[n("ReduceSum", [out[x], "axes_12"], [p + x + "_sum"], keepdims=0) for x in ("z_H_out", "z_L_out", "logits")],
        n("Sum", [p + "z_H_out_sum", p + "z_L_out_sum", p + "logits_sum", new_q], [p + "row_sum"]),
        n("IsNaN", [p + "row_sum"], [p + "nan"]),
        n("IsInf", [p + "row_sum"], [p + "inf"]),
        n("Or", [p + "nan", p + "inf"], [p + "not_finite"]),
        n("Not", [p + "not_finite"], [p + "finite"]),
        n("And", [running, p + "not_finite"], [p + "faulted"]),
        n("Where", [p + "faulted", p + "k_rows", fault], [p + "fault"]),
        n("And", [p + "go_on", p + "finite"], [p + "go_on_finite"]),
        n("And", [running, p + "go_on_finite"], [p + "running"]),
    ]
    return nodes, {"pred": p + "pred", "steps": p + "steps", "q": p + "q", "running": p + "running",
                   "fault": p + "fault"}


def _prologue(step: onnx.ModelProto, init: dict[str, np.ndarray]):
    """Shared outer-graph pieces: inputs, the initial carry and the initial halting state."""
    n = helper.make_node
    S_D = [d.dim_value for d in step.graph.input[2].type.tensor_type.shape.dim][1:]
    inits = [numpy_helper.from_array(v.reshape(1, 1, -1).astype(np.float32), f"{k}_vec") for k, v in init.items()]
    inits += [numpy_helper.from_array(np.array([1], np.int64), "axes_1"),
              numpy_helper.from_array(np.array([1, 2], np.int64), "axes_12"),
              numpy_helper.from_array(np.array(S_D, np.int64), "carry_tail"),
              numpy_helper.from_array(np.array(0, np.int64), "zero_i64"),
              numpy_helper.from_array(np.array(0.0, np.float32), "zero_f32"),
              numpy_helper.from_array(np.array(True), "true")]
    nodes = [
        n("Shape", ["tokens"], ["tokens_shape"]),
        n("Shape", ["tokens"], ["batch_dim"], start=0, end=1),
        n("Concat", ["batch_dim", "carry_tail"], ["carry_shape"], axis=0),
        n("Expand", ["H_init_vec", "carry_shape"], ["z_H0"]),
        n("Expand", ["L_init_vec", "carry_shape"], ["z_L0"]),
        n("Expand", ["zero_i64", "tokens_shape"], ["pred0"]),
        n("Expand", ["zero_i64", "batch_dim"], ["steps0"]),
        n("Expand", ["zero_f32", "batch_dim"], ["q0"]),
        n("Expand", ["true", "batch_dim"], ["running0"]),
    ]
    inputs = [_value(nm, dt, _dims(dims, step)) for nm, dt, dims in SPEC["loop"]["inputs"]]
    outputs = [_value(nm, dt, _dims(dims, step)) for nm, dt, dims in SPEC["loop"]["outputs"]]
    return nodes, inits, inputs, outputs


def _dims(dims: list[str], step: onnx.ModelProto) -> list:
    sizes = {"batch": "batch", "seq_len": step.graph.input[0].type.tensor_type.shape.dim[1].dim_value}
    return [sizes[d] for d in dims]


def _finish(step: onnx.ModelProto, graph: onnx.GraphProto) -> onnx.ModelProto:
    graph.initializer.extend(step.graph.initializer)
    model = helper.make_model(graph, opset_imports=list(step.opset_import), ir_version=step.ir_version)
    model.functions.extend(step.functions)
    onnx.checker.check_model(model, full_check=True)
    return model


def build_loop(step: onnx.ModelProto, init: dict[str, np.ndarray]) -> onnx.ModelProto:
    """One graph: an ONNX Loop over supervision steps, trip count max_steps, condition 'some row runs'."""
    n = helper.make_node
    pre_nodes, inits, inputs, outputs = _prologue(step, init)
    carry_in = [f"body/{x}_in" for x in ("z_H", "z_L", "pred", "steps", "q", "running", "fault")]
    step_nodes, out = _inline_step(step, "body/", {**_OUTER, "z_H": carry_in[0], "z_L": carry_in[1]})
    halt_nodes, h = _halting("body/h/", "body/k", dict(zip(("pred", "steps", "q", "running", "fault"), carry_in[2:])),
                             out)
    body_nodes = [n("Add", ["body/iter", "body/one"], ["body/k"]), *step_nodes, *halt_nodes,
                  n("Cast", [h["running"]], ["body/running_i"], to=TensorProto.INT64),
                  n("ReduceMax", ["body/running_i"], ["body/any_i"], keepdims=0),
                  n("Cast", ["body/any_i"], ["body/cond_out"], to=TensorProto.BOOL)]
    carry_types = [step.graph.input[2].type, step.graph.input[3].type]
    ins = [_value("body/iter", "int64", []), _value("body/cond", "bool", [])]
    ins += [helper.make_value_info(carry_in[i], carry_types[i]) for i in range(2)]
    ins += [_value(carry_in[2], "int64", _dims(["batch", "seq_len"], step)), _value(carry_in[3], "int64", ["batch"]),
            _value(carry_in[4], "float32", ["batch"]), _value(carry_in[5], "bool", ["batch"]),
            _value(carry_in[6], "int64", ["batch"])]
    body_outs = [_value("body/cond_out", "bool", []), helper.make_value_info(out["z_H_out"], carry_types[0]),
                 helper.make_value_info(out["z_L_out"], carry_types[1]),
                 _value(h["pred"], "int64", _dims(["batch", "seq_len"], step)), _value(h["steps"], "int64", ["batch"]),
                 _value(h["q"], "float32", ["batch"]), _value(h["running"], "bool", ["batch"]),
                 _value(h["fault"], "int64", ["batch"])]
    body = helper.make_graph(body_nodes, "supervision_step", ins, body_outs,
                             initializer=[numpy_helper.from_array(np.array(1, np.int64), "body/one")])
    loop = n("Loop", ["max_steps", "true", "z_H0", "z_L0", "pred0", "steps0", "q0", "running0", "steps0"],
             ["z_H_f", "z_L_f", "pred", "steps", "q_halt", "running_f", "fault"], body=body, name="supervision_loop")
    graph = helper.make_graph([*pre_nodes, loop], "trm_loop", inputs, outputs, initializer=inits)
    return _finish(step, graph)


def build_unrolled(step: onnx.ModelProto, init: dict[str, np.ndarray], n_steps: int) -> onnx.ModelProto:
    """`n_steps` supervision steps in a straight line (no control flow); weights shared, halting by masking."""
    pre_nodes, inits, inputs, outputs = _prologue(step, init)
    nodes = list(pre_nodes)
    state = {"z_H": "z_H0", "z_L": "z_L0", "pred": "pred0", "steps": "steps0", "q": "q0", "running": "running0",
             "fault": "steps0"}
    for k in range(1, n_steps + 1):
        inits.append(numpy_helper.from_array(np.array(k, np.int64), f"k{k}"))
        step_nodes, out = _inline_step(step, f"s{k}/", {**_OUTER, "z_H": state["z_H"], "z_L": state["z_L"]})
        halt_nodes, h = _halting(f"s{k}/h/", f"k{k}", state, out)
        nodes += step_nodes + halt_nodes
        state = {"z_H": out["z_H_out"], "z_L": out["z_L_out"], **h}
    nodes += [helper.make_node("Identity", [state[k]], [o]) for k, o in (("pred", "pred"), ("steps", "steps"),
                                                                         ("q", "q_halt"), ("fault", "fault"))]
    graph = helper.make_graph(nodes, f"trm_unrolled_{n_steps}", inputs, outputs, initializer=inits)
    return _finish(step, graph)
