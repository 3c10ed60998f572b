"""The conditional VAE, p(x, z | y) = p(z | y) p(x | z, y) with the label given: a batch is
images and their labels, the objective the ELBO of p(x | y), log p(x | y) given the true labels,
pictures by chosen label and the analogies figure."""

from __future__ import annotations

from pathlib import Path

import torch

from ..models import CVAEModel
from .base import EvalSet, Variant


class CVAEVariant(Variant):
    name = "cvae"
    takes_labels = True
    conditions_on_labels = True
    prior_given_labels = True  # p(z | y): --prior learned is one Gaussian per label

    @classmethod
    def build_model(cls, prior, decoder, likelihood, num_classes: int):
        return CVAEModel(prior, decoder, likelihood, num_classes)

    @classmethod
    def log_px_inputs(cls, labels: torch.Tensor, num_classes: int) -> tuple[dict, str]:
        return {"labels": labels}, "log p(x | y), true labels"

    def loss_args(self, x: torch.Tensor, y: torch.Tensor) -> tuple:
        return (x, y)  # -ELBO of p(x | y)

    def pictures(self, vae, test: EvalSet, out: Path) -> list[Path]:
        return self.conditional_pictures(vae, test, out, given=test.labels)
