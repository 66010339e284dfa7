"""trm-edge: Tiny Recursive Models from training to edge devices.

Importing the package stays light (numpy only) so the runtime side runs on a device without torch.
"""

from trm_edge.errors import CheckFailed, TRMEdgeError

__version__ = "0.1.0"
__all__ = ["CheckFailed", "TRMEdgeError", "__version__"]
