"""pyro-vae: variational autoencoders written as Pyro probabilistic programs."""

from .api import load
from .config import FitConfig
from .vae import VAE, build_vae

__version__ = "0.1.0"
__all__ = ["FitConfig", "VAE", "build_vae", "load", "__version__"]
