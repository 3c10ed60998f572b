"""The semi-supervised M2 model of Kingma et al. (2014), p(x, y, z) = p(y) p(z) p(x | z, y), the
label a latent variable observed for ``--labels`` images: a step takes an unlabelled batch and the
next labelled one (``--labelled-steps paired``) or one of the two (``interleaved``, Pyro's tutorial
schedule), the objective -J_alpha (TraceEnum_ELBO sums the unlabelled images' labels
exactly), per-epoch metrics add the classifier's accuracy, log p(x) sums over the labels, and
the pictures add the confusion matrix."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import torch

from .. import plots
from ..config import FitConfig
from ..config_values import spelled, spelled_value
from ..data import intensities
from ..evaluation import eval_mode
from ..guides.semisupervised import LabelClassifier, M2Guide
from ..labels import balanced_labelled_subset
from ..models import M2Model
from ..nets import NetSpec, build_encoder
from ..objectives import ELBOS, SemiSupervisedLoss
from .base import EVAL_BATCH_SIZE, EvalSet, Reduce, Variant, _no_reduce, eager_only_problems


class M2Variant(Variant):
    name = "m2"
    takes_labels = True
    sums_over_labels = True

    @classmethod
    def config_problems(cls, config, *, keywords: bool = False) -> list[str]:
        # (not the base's: --labels and --jit differ here)
        problems = cls.prior_problems(config, keywords=keywords) + cls.latent_problems(config, keywords=keywords)
        s, m2 = partial(spelled, keywords=keywords), spelled("model", "m2", keywords=keywords)
        if getattr(ELBOS.resolve(config.elbo), "needs_reparameterized", False):
            label = f"the label y of {m2}" if keywords else f"{m2}'s label y"
            problems.append(
                f"{s('elbo', config.elbo)} differentiates through reparameterized draws of every latent "
                f"site, and {label} is discrete (no rsample); use {s('elbo', FitConfig.elbo)} "
                f"(M2's objective sums over the labels exactly)"
            )
        elif config.elbo != FitConfig.elbo:  # the objective is its own; --elbo stays at its default
            problems.append(
                f"{m2} sums over the unknown labels with TraceEnum_ELBO; use {s('elbo', FitConfig.elbo)}, "
                f"not {spelled_value(config.elbo, keywords=keywords)}"
            )
        objective = f"the enumerated objective of {m2}" if keywords else f"{m2}'s enumerated objective"
        problems += eager_only_problems(config, objective, keywords=keywords)
        return problems

    @classmethod
    def wrap_guide(cls, guide, config, spec: NetSpec, num_classes: int):
        # q(y, z | x) = q(y | x) q(z | x, y)
        classifier_spec = NetSpec(spec.image_shape, config.latent_dim, tuple(config.hidden), activation=spec.activation)
        return M2Guide(LabelClassifier(build_encoder(config.net, classifier_spec), num_classes), guide, num_classes)

    @classmethod
    def build_model(cls, prior, decoder, likelihood, num_classes: int):
        return M2Model(prior, decoder, likelihood, num_classes)

    @classmethod
    def log_px_inputs(cls, labels: torch.Tensor, num_classes: int) -> tuple[dict, str]:
        return ({"sum_over_labels": num_classes}, f"log p(x) = log sum_y p(x, y) over {num_classes} labels")

    # -- training: an unlabelled batch and the next labelled one --------------------------------
    def setup(self, train, vae, log: Callable[[str], None]) -> str:
        """A class-balanced seeded subset of ``--labels`` images keeps its labels; the rest of the
        training set is used unlabelled."""
        cfg = self.config
        chosen = balanced_labelled_subset(train.labels, cfg.labelled, self.num_classes, cfg.seed)
        self.labelled_indices = chosen
        keep = torch.ones(len(train), dtype=torch.bool)
        keep[chosen] = False
        self.num_labelled = int(chosen.numel())
        self.num_train = len(train) - self.num_labelled
        self.labelled_batches = self._batches(
            train.data[chosen],
            train.labels[chosen],
            min(cfg.batch_size, self.num_labelled),
            cfg.seed + 1,
            what=f"the labelled batch, min(--batch-size, --labels) = {min(cfg.batch_size, self.num_labelled)},",
        )
        self.batches = self._batches(train.data[keep], train.labels[keep], cfg.batch_size, cfg.seed)
        self.loss = SemiSupervisedLoss(
            vae.model,
            vae.guide,
            self.num_train,
            self.num_labelled,
            cfg.alpha,
            cfg.particles,
            balanced=cfg.labelled_weight == "balanced",
        )
        return f"{self.num_train:,} unlabelled + {self.num_labelled} labelled training images"

    def __len__(self) -> int:
        """Optimizer steps per epoch: one per unlabelled batch, plus the labelled set's own
        batches with ``--labelled-steps interleaved``."""
        if self.config.labelled_steps == "interleaved":
            return len(self.batches) + len(self.labelled_batches)
        return len(self.batches)

    def _labelled_stream(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Epoch after epoch of the (small) labelled set, started afresh at each unlabelled epoch
        so that a checkpoint between epochs captures the whole state."""
        while True:
            for i, (x, y) in enumerate(self.labelled_batches):
                yield i, x, y

    def training_batches(self, first_step: int = 0) -> Iterator[tuple]:
        """One epoch of ``(x_u, x_l, y_l, unlabelled_scale, labelled_scale, beta)``."""
        if self.config.labelled_steps == "interleaved":
            yield from self._interleaved_batches(first_step)
            return
        labelled = self._labelled_stream()
        for i, (x_u, _) in enumerate(self.batches):
            j, x_l, y_l = next(labelled)
            # -J_alpha on this pair
            yield (
                x_u,
                x_l,
                y_l,
                self._data_scale(self.num_train, self.batches, i),
                self._data_scale(self.num_labelled, self.labelled_batches, j),
                self.beta(first_step + i),
            )

    def labelled_step_indices(self) -> list[int]:
        """The steps of an epoch that take a labelled batch with ``--labelled-steps interleaved``:
        Pyro's tutorial rule, step i is labelled when i % every == 1 (every = steps // labelled
        batches) until the labelled set is used up, so the labelled batches are spread evenly."""
        steps, count = len(self), len(self.labelled_batches)
        every = steps // count
        first = 1 if every > 1 else 0
        return [first + j * every for j in range(count)]

    def _interleaved_batches(self, first_step: int) -> Iterator[tuple]:
        """One epoch of unlabelled steps ``(x_u, None, None, ...)`` with the labelled set's own
        steps ``(None, x_l, y_l, ...)`` among them. Every step's loss is its batch's sum times
        ``steps`` (and the processes, whose gradients DDP averages), for both kinds alike, as the
        tutorial sums each batch: the epoch's step losses add up to ``steps`` times an estimate of
        -J_alpha, so their mean estimates it, and each image keeps its weight in J_alpha."""
        scale = len(self) * self.shard[1]
        labelled_at = set(self.labelled_step_indices())
        unlabelled, labelled = iter(self.batches), iter(self.labelled_batches)
        for i in range(len(self)):
            if i in labelled_at:
                x_l, y_l = next(labelled)
                yield None, x_l, y_l, scale, scale, self.beta(first_step + i)
            else:
                x_u, _ = next(unlabelled)
                yield x_u, None, None, scale, scale, self.beta(first_step + i)

    def first_batch(self) -> tuple:
        x_u = intensities(self.batches.images[:2]).to(self.device)  # stored uint8 maybe
        x_l = intensities(self.labelled_batches.images[:2]).to(self.device)
        y_l = self.labelled_batches.labels[:2]
        if self.config.binarize == "dynamic":
            x_u, x_l = (x_u > 0.5).to(x_u.dtype), (x_l > 0.5).to(x_l.dtype)
        return x_u, x_l, y_l, 1.0, 1.0, 1.0  # (scales: 1)

    def sampler_state(self) -> dict:
        return {"unlabelled": self.batches.state_dict(), "labelled": self.labelled_batches.state_dict()}

    def load_sampler_state(self, state: dict) -> None:
        self.batches.load_state_dict(state["unlabelled"])
        self.labelled_batches.load_state_dict(state["labelled"])

    def files(self, out: Path) -> dict[str, dict]:
        return {
            "labelled_indices.json": {
                "labels": self.config.labelled,
                "seed": self.config.seed,
                "indices_into_training_set": self.labelled_indices.tolist(),
            }
        }

    # -- metrics and pictures -------------------------------------------------------------------
    def epoch_metrics(self, vae, eval_sets: list[EvalSet], reduce: Reduce = _no_reduce) -> dict[str, float]:
        """The ELBO of p(x) (one draw of y ~ q(y|x) and z per image) and q(y|x)'s accuracy."""
        out = super().epoch_metrics(vae, eval_sets, reduce)
        rank, world = self.shard
        for s in eval_sets:
            correct = torch.zeros((), dtype=torch.float64, device=s.images.device)
            for chunk, start in enumerate(range(0, s.images.shape[0], EVAL_BATCH_SIZE)):
                if chunk % world == rank:
                    predicted = predict(vae, s.images[start : start + EVAL_BATCH_SIZE])
                    correct += (predicted == s.labels[start : start + EVAL_BATCH_SIZE]).double().sum()
            out[f"{s.name}_accuracy"] = float(reduce(correct)) / s.images.shape[0]
        return out

    def epoch_line(self, record: dict) -> str:
        return f"  test accuracy {record['test_accuracy']:.2%}"

    def pictures(self, vae, test: EvalSet, out: Path) -> list[Path]:
        paths = self.conditional_pictures(vae, test, out, given=None)  # M2 infers the label
        predicted = torch.cat(
            [
                predict(vae, test.images[i : i + EVAL_BATCH_SIZE])
                for i in range(0, test.images.shape[0], EVAL_BATCH_SIZE)
            ]
        )
        paths.append(
            plots.confusion_matrix(
                test.labels.cpu(),
                predicted.cpu(),
                out / "confusion_matrix.png",
                title=f"q(y|x) on the {test.description.split(':')[0]}, {self.config.labelled} labels",
            )
        )
        return paths


@torch.no_grad()
def predict(vae, images: torch.Tensor) -> torch.Tensor:
    """argmax_y q(y | x), in eval mode."""
    with eval_mode(vae):
        return vae.classify(images).argmax(-1)
