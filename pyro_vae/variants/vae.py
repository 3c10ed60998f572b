"""The plain VAE, p(x, z) = p(z) p(x | z): a batch is images, the objective Pyro's ELBO (or the
IWAE bound) of p(x), log p(x) importance-weighted, pictures of p(z) samples and the latent plane.

With missing pixels (``--missing-rate``, or a mask with the data) a batch is images and their
masks, the model scores the observed values, p(x_obs, z), the guide reads [x * m, m], and the
pictures add the imputations (:mod:`pyro_vae.variants.missing`)."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import plots
from ..models import VAEModel
from ..models.missing import MaskedVAEModel
from .base import PICTURE_IMAGES, EvalSet, Variant
from .missing import split_masks

IMPUTATION_PARTICLES = 100  # importance samples per image of the imputations picture


class VAEVariant(Variant):
    name = "vae"
    takes_missing_pixels = True

    @classmethod
    def build_model(cls, prior, decoder, likelihood, num_classes: int):
        return VAEModel(prior, decoder, likelihood)

    @classmethod
    def build_masked_model(cls, prior, decoder, likelihood, num_classes: int):
        return MaskedVAEModel(prior, decoder, likelihood)

    def batch_companions(self, train) -> torch.Tensor:
        """Each training image's mask of observed values when pixels are missing, else its label."""
        return split_masks(self.config, train) if self.config.masked else train.labels

    def setup(self, train, vae, log) -> str:
        description = super().setup(train, vae, log)
        if self.config.masked:
            source = "the data's own mask" if self.config.data_mask else f"--missing-rate {self.config.missing_rate:g}"
            description += f", the observed values scored ({source})"
        return description

    def loss_args(self, x: torch.Tensor, y: torch.Tensor) -> tuple:
        """``(x, mask)`` when pixels are missing (``y`` holds the masks), else ``(x, None)``."""
        return (x, y) if self.config.masked else (x, None)

    def eval_labels(self, eval_set: EvalSet) -> torch.Tensor | None:
        """The evaluation images' masks when pixels are missing: the ELBO of x_obs."""
        return eval_set.mask if self.config.masked else None

    def pictures(self, vae, test: EvalSet, out: Path) -> list[Path]:
        paths = super().pictures(vae, test, out)
        if self.config.masked and test.mask is not None:
            n = min(PICTURE_IMAGES // 2, test.images.shape[0])
            paths.append(
                plots.imputation_grid(
                    vae, test.images[:n], test.mask[:n], out / "imputations.png", k=IMPUTATION_PARTICLES
                )
            )
        return paths
