"""edgefuse: multimodal sensor-fusion models from PyTorch to edge engines that survive sensor dropouts.

``import edgefuse`` is light (numpy only): the runtime path must run on a device without
torch. Modules that need torch (``edgefuse.fusion``, ``edgefuse.train``, ``edgefuse.export``)
import it themselves.
"""

from edgefuse.specs import ModalitySpec, all_subsets, default_subsets, parse_subset, subset_name

__version__ = "0.1.0"

__all__ = ["ModalitySpec", "__version__", "all_subsets", "default_subsets", "parse_subset", "subset_name"]
