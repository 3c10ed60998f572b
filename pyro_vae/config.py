"""The frozen configuration of a training run, saved as ``config.json`` next to every checkpoint.

One dataclass is the single source of truth: the CLI's flags, their help and defaults, the
``--config FILE`` keys and the JSON that rebuilds a model are all generated from its fields.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .config_values import choice_problem, field_values, flag, seed_problem
from .errors import ConfigError

# The sections of ``fit --help``, in order; each field's ``group`` metadata names one.
GROUPS = {
    "data": "which images, how many, how binarized",
    "model": "the generative model p(x, z) and the guide q(z|x); --prior, --guide, --likelihood and "
    "--net also take your own, by import path (mypackage.priors:LaplacePrior; see docs/extending.md)",
    "training": "the objective, the optimizer and the schedule",
    "devices": "where training runs",
    "output": "what is written where",
}


def _opt(default, help: str, *, group: str, **meta):
    """A field with its ``--help`` text, its section of ``fit --help`` (a key of :data:`GROUPS`)
    and, for a choice, ``choices``: a literal tuple or ``"module:REGISTRY"`` (the registry's names)."""
    assert group in GROUPS, group
    return field(default=default, metadata={"help": help, "group": group, **meta})


DEFAULT_LABELS = 100  # --model m2 without --labels: Kingma et al.'s smallest labelled set


@dataclass(frozen=True)
class FitConfig:
    """Everything that defines a run. Defaults give a good MNIST model in about 5 CPU minutes."""

    dataset: str | None = _opt(
        None,
        "a named data set (mnist and fashion-mnist are fetched, offline too; the others are read "
        "from --data-dir in torchvision's layout, or downloaded); default: mnist, unless --data is given",
        choices="pyro_vae.data.catalog:DATASET_NAMES",
        group="data",
    )
    data: str | None = _opt(
        None,
        "your own data instead of --dataset: a folder of images (one sub-folder per class, or "
        "flat; train/ valid/ test/ sub-folders give its own split) or an .npz, .npy or .pt file of "
        "arrays (see docs/own-data.md)",
        group="data",
    )
    image_size: int | None = _opt(
        None,
        "resize each image's shorter side to S and crop its centre S x S (default: keep the "
        "size; images of different sizes need it)",
        group="data",
    )
    channels: int | None = _opt(
        None,
        "1 (grey) or 3 (colour): convert every image to this many channels (default: as the "
        "data are; a folder mixing grey and colour becomes colour)",
        group="data",
    )
    split: str | None = _opt(
        None,
        "train,valid,test fractions for --data without a split of its own, cut from one seeded "
        "order that does not depend on --seed (default: 0.8,0.1,0.1)",
        group="data",
    )
    skip_bad_images: bool = _opt(
        False,
        "skip unreadable images and files with unknown extensions in a --data folder (and say "
        "how many) instead of stopping at the first",
        group="data",
    )
    data_kind: str | None = _opt(
        None,
        "recorded by fit: image-folder, array-file or catalogue:<name> (default: found from the data)",
        group="data",
    )
    data_checksum: str | None = _opt(
        None,
        "recorded by fit: the content checksum of the data; evaluate and --resume refuse data "
        "that differ (default: not checked)",
        group="data",
    )
    data_dir: str | None = _opt(
        None,
        "folder holding the data in torchvision's layout; also the download cache and the cache "
        "of decoded --data folders (default: $PYRO_VAE_DATA or ~/.cache/pyro-vae)",
        group="data",
    )
    binarize: str | None = _opt(
        None,
        "dynamic: resample x ~ Bernoulli(intensity) each time an image is drawn; "
        "static: one fixed seeded binarization; none: intensities in [0, 1] (default: none for "
        "--likelihood discretized-logistic, else dynamic)",
        choices="pyro_vae.data.binarize:BINARIZATION_MODES",
        group="data",
    )
    train_size: int | None = _opt(
        None, "use only the first N training images (for quick experiments); default: all", group="data"
    )
    train_on_validation: bool = _opt(
        False,
        "train on the training and validation images together (MNIST: all 60,000, the standard "
        "split Burda et al. use); the validation metrics then measure training images",
        group="data",
    )
    eval_size: int | None = _opt(
        None, "use only the first N validation and test images; default: all of them", group="data"
    )
    missing_rate: float = _opt(
        0.0,
        "drop this share of each image's values at random (a seeded mask per image, the same at "
        "evaluation); training and evaluation then score the observed pixels only, the encoder sees "
        "the zero-filled image and its mask (Mattei & Frellsen's MIWAE with --elbo iwae; docs/objectives.md)",
        group="data",
    )
    data_mask: bool = _opt(
        False,
        "recorded by fit: the --data file holds a mask array (1 observed, 0 missing) that training and "
        "evaluation use as --missing-rate's masks (docs/own-data.md)",
        group="data",
    )
    model: str = _opt(
        "vae",
        "the model kind: p(x, z), a conditional VAE p(x, z | y) with the label given, or Kingma et "
        "al.'s semi-supervised M2 with the label latent, observed for --labels images",
        choices="pyro_vae.variants:VARIANTS",
        group="model",
    )
    labels: int | None = _opt(
        None,
        "--model m2: number of labelled training images, a class-balanced seeded subset "
        "(default: 100); the rest are used unlabelled",
        group="model",
    )
    alpha: float = _opt(
        0.1,
        "--model m2: weight of the classification term alpha * E_labelled[-log q(y|x)] in units "
        "of the training-set size N (Kingma et al.: alpha = 0.1 N)",
        group="training",
    )
    labelled_weight: str = _opt(
        "balanced",
        "--model m2: balanced weighs the labelled images (ELBO and classification term) as if "
        "there were as many as unlabelled ones, like batches of equal labelled and unlabelled parts; "
        "counted weighs every image once, Kingma et al.'s J_alpha taken literally",
        choices=("balanced", "counted"),
        group="training",
    )
    labelled_steps: str = _opt(
        "paired",
        "--model m2: paired adds a labelled batch to every unlabelled batch's step (the labelled "
        "set cycled); interleaved gives each epoch one pass over the labelled set in steps of their own, "
        "spread evenly among the unlabelled steps, as Pyro's semi-supervised VAE tutorial does",
        choices=("paired", "interleaved"),
        group="training",
    )
    likelihood: str = _opt(
        "bernoulli",
        "p(x|z): binary pixels, Gaussians (a fixed --gaussian-scale, one learned scale per "
        "pixel, or one from the decoder), the continuous Bernoulli, or the discretized logistic over "
        "8-bit pixel values (results also in bits per dimension)",
        choices="pyro_vae.models.likelihoods:LIKELIHOODS",
        group="model",
    )
    gaussian_scale: float = _opt(0.1, "the fixed standard deviation of --likelihood gaussian", group="model")
    latent_dim: int | tuple[int, ...] = _opt(
        32,
        "dimension D of the latent z; --model hvae: one width per stochastic layer, comma-separated, "
        "the first nearest x (Burda et al.: 100,50)",
        group="model",
    )
    net: str = _opt(
        "mlp",
        "encoder/decoder networks: dense layers; stride-2 conv + batch norm blocks "
        "sized from the images; or Tomczak & Welling's gated dense layers",
        choices="pyro_vae.nets:ENCODERS",
        group="model",
    )
    hidden: tuple[int, ...] = _opt(
        (512, 512),
        "hidden widths, comma-separated (the decoder mirrors the encoder); the conv "
        "nets use the last one as their dense width",
        group="model",
    )
    activation: str = _opt(
        "relu", "nonlinearity of the --net mlp hidden layers", choices="pyro_vae.nets:ACTIVATIONS", group="model"
    )
    init: str = _opt(
        "torch",
        "initialisation of every linear layer: torch (PyTorch's default), glorot (uniform, "
        "Glorot & Bengio 2010, zero biases: Burda et al.) or he (weights normal with std sqrt(2 / fan_in), "
        "biases as torch: Tomczak & Welling's code)",
        choices="pyro_vae.nets:INITIALIZERS",
        group="model",
    )
    prior: str = _opt(
        "standard",
        "p(z): N(0, I); a learned diagonal Gaussian; a mixture of --prior-components "
        "learned Gaussians; or a VampPrior over --prior-components pseudo-inputs",
        choices="pyro_vae.models.priors:PRIORS",
        group="model",
    )
    prior_components: int | None = _opt(
        None, "components K of a mixture prior (default: the prior's own)", group="model"
    )
    guide: str = _opt(
        "diag",
        "q(z|x): a diagonal Normal; a Normal with covariance W W^T + diag (rank --guide-rank); "
        "an inverse autoregressive flow (--flow-layers layers); or a masked autoregressive flow (the same "
        "layers inverted: one-pass density of a given z, for --prior vamp)",
        choices="pyro_vae.guides:GUIDES",
        group="model",
    )
    guide_rank: int = _opt(4, "rank of the low-rank covariance factor of --guide lowrank", group="model")
    flow_layers: int = _opt(2, "number of affine autoregressive transforms of --guide iaf or maf", group="model")
    flow_hidden: int = _opt(320, "hidden width of each IAF/MAF transform's autoregressive network", group="model")
    flow_context: str | None = _opt(
        None,
        "what each IAF/MAF transform is conditioned on: x (the encoder's features, Kingma et al. 2016) "
        "or none (transforms shared by all images; x enters through the base Normal). Default: none "
        "with --prior vamp (its log p(z) then inverts each z once, not once per pseudo-input), x otherwise",
        choices=("x", "none"),
        group="model",
    )
    elbo: str = _opt(
        "trace",
        "Trace_ELBO (Monte-Carlo KL), TraceMeanField_ELBO (analytic KL), the importance-"
        "weighted bound with K = --particles (Burda et al. 2015), that bound with the doubly "
        "reparameterized gradient (iwae-dreg), the ELBO without the score term (stl), or "
        "Rainforth et al.'s piwae, miwae, ciwae (docs/objectives.md)",
        choices="pyro_vae.objectives:ELBOS",
        group="training",
    )
    particles: int = _opt(
        1,
        "samples of z per image for the ELBO estimate (vectorized); with --elbo iwae, the K of the bound",
        group="training",
    )
    iw_bounds: int | None = _opt(
        None,
        "M of --elbo miwae and piwae (Rainforth et al. 2018): --particles split into M groups, one "
        "importance-weighted bound of --particles / M samples each (their 8 x 8: --particles 64 --iw-bounds 8)",
        group="training",
    )
    ciwae_beta: float = _opt(
        0.5,
        "beta of --elbo ciwae (Rainforth et al. 2018), in [0, 1]: beta * ELBO + (1 - beta) * IWAE bound",
        group="training",
    )
    beta: float = _opt(1.0, "weight of the KL term (beta-VAE); 1 is the ELBO", group="training")
    warmup_epochs: float = _opt(
        0.0, "KL warm-up: beta rises linearly from 0 to --beta over this many epochs", group="training"
    )
    epochs: int = _opt(30, "number of passes over the training set", group="training")
    batch_size: int = _opt(
        128,
        "images per optimizer step: the global batch, split evenly across --devices x --num-nodes processes",
        group="training",
    )
    lr: float = _opt(1e-3, "learning rate", group="training")
    optimizer: str = _opt(
        "adam",
        "one torch.optim.Adam over every parameter; clipped-adam also clips each gradient "
        "element to [-10, 10] first (as pyro.optim.ClippedAdam did)",
        choices="pyro_vae.engine.optim:OPTIMIZERS",
        group="training",
    )
    lr_decay: float = _opt(
        0.95,
        "learning rate multiplied by this after each epoch (torch.optim.lr_scheduler.ExponentialLR); "
        "1 keeps it constant",
        group="training",
    )
    jit: bool = _opt(
        False,
        "trace the ELBO with torch.jit once per batch shape (the KL weight and the "
        "mini-batch scale enter as tensors): less Python per step, which small models feel most; "
        "--elbo trace or meanfield, --model vae or cvae (TorchScript, which PyTorch keeps in "
        "maintenance only: --compile is its torch.compile successor)",
        group="training",
    )
    compile: bool = _opt(
        False,
        "capture the ELBO's tensor operations once per batch shape and compile them, with their "
        "backward, by torch.compile (inductor; on the CPU it needs a C++ compiler, without one the "
        "captured graph runs uncompiled); the first step of each batch shape compiles (about a "
        "minute on a CPU); --elbo trace or meanfield, --model vae or cvae",
        group="training",
    )
    adam_beta1: float = _opt(0.9, "Adam's beta1 (decay of the gradient's running mean)", group="training")
    adam_beta2: float = _opt(0.999, "Adam's beta2 (decay of the squared gradient's running mean)", group="training")
    adam_eps: float = _opt(1e-8, "Adam's epsilon (Burda et al.: 1e-4)", group="training")
    lr_schedule: str = _opt(
        "exponential",
        "exponential: --lr times --lr-decay per epoch; burda: Burda et al.'s 3^i passes at "
        "--lr * 10^(-i/7), i = 0..7 (3,280 passes in all; --lr-decay unused)",
        choices="pyro_vae.engine.optim:LR_SCHEDULES",
        group="training",
    )
    early_stopping: int = _opt(
        0, "stop when the validation ELBO has not improved for this many epochs (0: never)", group="training"
    )
    max_minutes: float | None = _opt(
        None,
        "stop training before the epoch that would end past this many minutes (of this "
        "invocation; a --resume gets its own); default: no limit",
        group="training",
    )
    seed: int = _opt(0, "random seed: the same seed gives the same run on the same device", group="training")
    accelerator: str = _opt(
        "auto",
        "the device kind; auto: cuda, else mps, else cpu",
        choices="pyro_vae.engine.fabric:ACCELERATORS",
        group="devices",
    )
    devices: str = _opt(
        "1",
        "processes (one device each) per node: a number, or auto (every GPU of the node; 1 on a CPU)",
        group="devices",
    )
    num_nodes: int = _opt(
        1, "machines taking part (under torchrun or SLURM, which start the processes)", group="devices"
    )
    strategy: str = _opt(
        "auto",
        "how processes share the work (auto: ddp for more than one process)",
        choices="pyro_vae.engine.fabric:STRATEGIES",
        group="devices",
    )
    precision: str = _opt(
        "32-true",
        "bf16-mixed: networks in bfloat16, log-densities in float32; 16-mixed: float16 with loss scaling (GPUs)",
        choices="pyro_vae.engine.fabric:PRECISIONS",
        group="devices",
    )
    device: str | None = _opt(
        None,
        "old name of --accelerator; kept as an alias",
        choices="pyro_vae.engine.fabric:ACCELERATORS",
        group="devices",
    )
    out: str = _opt("runs/mnist", "output folder for config, metrics, checkpoints and pictures", group="output")
    tensorboard: bool = _opt(False, "also write TensorBoard scalars and images to OUT/tensorboard", group="output")
    eval_k: int = _opt(
        0,
        "after training, estimate the test log p(x) with this many importance samples "
        "(python -m pyro_vae.evaluate OUT --k K); 0 skips it",
        group="output",
    )

    def __post_init__(self):
        """Checks of each field on its own: types were coerced by :meth:`from_dict`; here ranges,
        finite numbers and choices. Rules between fields are :func:`pyro_vae.variants.check`'s."""
        problems = [
            f"--{flag(f.name)} must be a finite number, got {getattr(self, f.name)}"
            for f in dataclasses.fields(self)
            if f.type == "float" and not math.isfinite(getattr(self, f.name))
        ]
        if problems:  # NaN or infinity would slip through every range check below
            raise ConfigError("; ".join(problems))
        if (problem := seed_problem(self.seed, "--seed")) is not None:
            problems.append(problem)
        for name in (
            "latent_dim",
            "epochs",
            "batch_size",
            "particles",
            "iw_bounds",
            "guide_rank",
            "flow_layers",
            "flow_hidden",
            "train_size",
            "eval_size",
            "prior_components",
            "image_size",
            "labels",
        ):
            value = getattr(self, name)
            if value is not None and min(value if isinstance(value, tuple) else (value,)) < 1:
                problems.append(f"--{flag(name)} must be at least 1, got {value}")
        for name in ("eval_k", "beta", "warmup_epochs", "early_stopping", "alpha"):
            if not getattr(self, name) >= 0:
                problems.append(f"--{flag(name)} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "gaussian_scale", "adam_eps", "max_minutes"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                problems.append(f"--{flag(name)} must be positive, got {value}")
        if not self.hidden or min(self.hidden) < 1:
            problems.append(f"--hidden needs positive widths, got {self.hidden}")
        if not 0 <= self.missing_rate < 1:
            problems.append(
                f"--missing-rate is the share of each image's values dropped, in [0, 1), got {self.missing_rate}"
            )
        if not 0 <= self.ciwae_beta <= 1:
            problems.append(f"--ciwae-beta must be in [0, 1], got {self.ciwae_beta}")
        if not 0 < self.lr_decay <= 1:
            problems.append(f"--lr-decay must be in (0, 1], got {self.lr_decay}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                problems.append(f"--{flag(name)} must be in [0, 1), got {getattr(self, name)}")
        if self.channels is not None and self.channels not in (1, 3):
            problems.append(f"--channels must be 1 (grey) or 3 (colour), got {self.channels}")
        problems += [p for f in dataclasses.fields(self) if (p := choice_problem(f, getattr(self, f.name)))]
        if not problems:
            problems += self._engine_problems()
        if problems:
            raise ConfigError("; ".join(problems))

    def _engine_problems(self) -> list[str]:
        problems = []
        devices = str(self.devices)
        if devices != "auto" and not (devices.isdigit() and int(devices) >= 1):
            problems.append(f"--devices takes a number of processes (1, 2, ...) or auto, got {self.devices!r}")
        if self.num_nodes < 1:
            problems.append(f"--num-nodes must be at least 1, got {self.num_nodes}")
        return problems

    @property
    def world_size(self) -> int | None:
        """Processes taking part (devices x nodes), or None while --devices is auto."""
        return None if str(self.devices) == "auto" else int(self.devices) * self.num_nodes

    @property
    def masked(self) -> bool:
        """Whether some pixels are missing: drawn (--missing-rate) or given with the data (a mask array)."""
        return self.missing_rate > 0 or self.data_mask

    @property
    def labelled(self) -> int:
        """--model m2's number of labelled training images."""
        return DEFAULT_LABELS if self.labels is None else self.labels

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config", keywords: bool = False) -> FitConfig:
        """Build from a mapping whose keys may use dashes or underscores; unknown keys are errors,
        spelled as Python keywords with ``keywords`` (else as flags), with the closest known key."""
        return cls(**field_values(dataclasses.fields(cls), data, source, keywords=keywords))

    def replace(self, **changes) -> FitConfig:
        return dataclasses.replace(self, **changes)


def config_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(FitConfig))
