"""pyro-vae: variational autoencoders written as Pyro probabilistic programs."""

from .api import Run, fit, load
from .config import FitConfig
from .vae import VAE
from .variants import build_vae

__version__ = "0.1.0"
__all__ = ["FitConfig", "Run", "VAE", "build_vae", "fit", "load", "__version__"]
