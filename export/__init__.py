"""Export: the recursion as ONNX graphs (step, loop, unrolled) and further formats (OpenVINO IR, LiteRT), each
verified and bundled."""

from trm_edge.export.options import ExportOptions, QuantOptions
from trm_edge.export.pipeline import export_bundle

__all__ = ["ExportOptions", "QuantOptions", "export_bundle"]
