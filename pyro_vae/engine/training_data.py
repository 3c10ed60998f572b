"""The images a run trains on and the evaluation sets its per-epoch metrics are measured on."""

from __future__ import annotations

import torch

from ..data import evaluation_images
from ..data.binarize import EVALUATION_SEED
from ..variants import EvalSet
from ..variants.missing import split_masks

TRAIN_EVAL_SIZE = 10_000  # training images on which the per-epoch train ELBO is measured


def rows_used(config) -> dict[str, int | None]:
    """How many rows of each split (from its start; None: all) a run of ``config`` reads: the
    first ``--train-size`` training images (all of them, and all validation images, with
    ``--train-on-validation``), whose first ``TRAIN_EVAL_SIZE`` are its training evaluation set,
    and the first ``--eval-size`` validation and test images."""
    if config.train_on_validation:
        return {"train": None, "valid": None, "test": config.eval_size}
    return {"train": config.train_size, "valid": config.eval_size, "test": config.eval_size}


def training_split(dataset, config):
    """The training split as ``config`` says: with ``--train-on-validation`` the validation images
    too (the standard 60,000 / 10,000 split of MNIST), then the first ``--train-size`` images."""
    train = dataset.train
    if config.train_on_validation:
        masks = (train.mask, dataset.valid.mask)  # the data's own masks of missing values, if any
        train = type(train)(
            train.name,
            torch.cat([train.images, dataset.valid.images]),
            torch.cat([train.labels, dataset.valid.labels]),
            None if masks[0] is None else torch.cat(masks),
        )
    if config.train_size is not None:
        train = train.subset(config.train_size)
    return train


def evaluation_sets(config, dataset, train, likelihood, device: torch.device) -> list[EvalSet]:
    """The train, valid and test evaluation sets on ``device``: the first ``TRAIN_EVAL_SIZE``
    training images, the first ``--eval-size`` of the others, binarized as ``config`` says and
    checked against the ``likelihood`` (if the model has one)."""
    limits = {"train": TRAIN_EVAL_SIZE, "valid": config.eval_size, "test": config.eval_size}
    sets = []
    for split in (train, dataset.valid, dataset.test):
        # binarized: the whole split, then the first n (under --binarize static the training-set
        # evaluation sees exactly the images training sees); else only the first n are converted.
        # Seed 0 for every run, except --binarize static's training split: its own binarization
        seed = config.seed if config.binarize == "static" and split is train else EVALUATION_SEED
        n = min(limits[split.name] or len(split), len(split))
        images, description = evaluation_images(split, config.binarize, seed, limit=n)
        if likelihood is not None:
            likelihood.check_data(images[:n], "none")
        mask = split_masks(config, split, n)  # None unless pixels are missing
        sets.append(
            EvalSet(
                split.name,
                images[:n].to(device),
                split.labels[:n].to(device),
                description,
                None if mask is None else mask.to(device),
            )
        )
    return sets
