"""Export: the recursion as ONNX graphs (step, loop, unrolled), verified and bundled."""

from trm_edge.export.pipeline import export_bundle, parse_graphs

__all__ = ["export_bundle", "parse_graphs"]
