"""Class labels as inputs: checks, one-hot codes, and the class-balanced labelled subset of M2.

Labels are integers 0..C-1 (C = 10 for MNIST and Fashion-MNIST). Networks receive them one-hot;
an enumerated label (shape (C, 1) under ``TraceEnum_ELBO``) becomes (C, 1, C) and broadcasts
against the batch of images inside the networks.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError


def check_label_values(y: torch.Tensor, num_classes: int, what: str = "label") -> torch.Tensor:
    """``y`` as a long tensor, or a clear error naming the first label outside 0..C-1."""
    y = torch.as_tensor(y)
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise ConfigError(f"{what}s must be whole numbers 0-{num_classes - 1}, got {y.flatten()[:5].tolist()}")
    y = y.long()
    bad = (y < 0) | (y >= num_classes)
    if bool(bad.any()):
        raise ConfigError(
            f"{what} {int(y[bad].flatten()[0])} is outside 0-{num_classes - 1}: this model "
            f"knows {num_classes} classes; give a {what} between 0 and {num_classes - 1}"
        )
    return y


def one_hot(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(...,) integer labels -> (..., C) float one-hot codes."""
    return F.one_hot(y.long(), num_classes).float()


def balanced_labelled_subset(labels: torch.Tensor, n: int, num_classes: int, seed: int) -> torch.Tensor:
    """Indices of ``n`` labelled examples, ``n / C`` drawn at random (seeded) from each class,
    sorted. Errors name the fix when ``n`` cannot be split evenly or a class is too small."""
    total = int(labels.shape[0])
    if n < num_classes or n % num_classes:
        raise ConfigError(
            f"--labels {n} cannot be split into {num_classes} equal classes; give a "
            f"multiple of {num_classes} (e.g. {max(num_classes, n // num_classes * num_classes)})"
        )
    if n >= total:
        raise ConfigError(
            f"--labels {n} asks for at least as many labelled images as the training set "
            f"has ({total:,}); M2 needs unlabelled images too: give fewer (e.g. 100)"
        )
    per_class = n // num_classes
    rng = np.random.default_rng(seed)
    labels_np = labels.cpu().numpy()
    chosen = []
    for c in range(num_classes):
        members = np.flatnonzero(labels_np == c)
        if members.size < per_class:
            raise ConfigError(
                f"--labels {n} needs {per_class} images of class {c}, but the training set "
                f"has only {members.size}; give --labels <= {members.size * num_classes}"
            )
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return torch.from_numpy(np.sort(np.concatenate(chosen)))


def label_input(y: torch.Tensor | None, num_classes: int) -> torch.Tensor | None:
    """A network's conditioning input: None when it is not conditioned on labels (``num_classes``
    0), else one-hot ``y`` (..., C). A conditioned network called without labels is an error."""
    if not num_classes:
        return None
    if y is None:
        raise ConfigError(
            f"this network is conditioned on the label: pass y (integer labels 0-{num_classes - 1}) along with x"
        )
    return one_hot(y, num_classes)
