"""brainuad: unsupervised anomaly segmentation in brain MRI (Baur et al. 2018 and its model zoo)."""

from brainuad.errors import BrainUADError

__version__ = "0.1.0"
__all__ = ["BrainUADError", "__version__"]
