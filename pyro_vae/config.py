"""The frozen configuration of a training run, saved as ``config.json`` next to every checkpoint.

One dataclass is the single source of truth: the CLI's flags, their help and defaults, the
``--config FILE`` keys and the JSON that rebuilds a model are all generated from its fields.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError


DEFAULT_PRIOR_COMPONENTS = {"mog": 10, "vamp": 500}  # vamp: Tomczak & Welling's K
# Options that may differ between a run's config.json and the checkpoints of that run (resuming may
# change them); every other option defines the model and its training, and must agree. The number
# of processes may not change: the checkpoint holds one RNG state per process, and the resume checks it.
RESUMABLE_CHANGES = frozenset({"epochs", "device", "accelerator", "devices", "num_nodes", "strategy",
                               "tensorboard", "data_dir", "out", "eval_k", "data", "max_minutes"})
# --data may move: its content is checked against the recorded checksum
SEED_LIMIT = 2**32  # seeds lie in [0, 2^32): NumPy's seed range, which pyro.set_rng_seed also sets


# The sections of ``fit --help``, in order; each field's ``group`` metadata names one.
GROUPS = {
    "data": "which images, how many, how binarized",
    "model": "the generative model p(x, z) and the guide q(z|x); --prior, --guide, --likelihood and "
             "--net also take your own, by import path (mypackage.priors:LaplacePrior; see docs/extending.md)",
    "training": "the objective, the optimizer and the schedule",
    "devices": "where training runs",
    "output": "what is written where",
}
_group = None  # the section of the fields that follow in FitConfig's body (set by _section)


def _section(name: str) -> None:
    """Start a section of FitConfig's fields: those that follow get ``metadata["group"] = name``."""
    global _group
    assert name in GROUPS, name
    _group = name


def _opt(default, help: str, **meta):
    return field(default=default, metadata={"help": help, "group": _group, **meta})


DEFAULT_LABELS = 100  # --model m2 without --labels: Kingma et al.'s smallest labelled set


@dataclass(frozen=True)
class FitConfig:
    """Everything that defines a run. Defaults give a good MNIST model in about 5 CPU minutes."""

    _section("data")
    dataset: str | None = _opt(
        None, "a named data set: mnist, fashion-mnist (fetched, offline too), or one of torchvision's "
        "(cifar10, svhn, celeba, kmnist, emnist, omniglot: read from --data-dir in torchvision's layout, "
        "or downloaded); default: mnist, unless --data is given", choices="pyro_vae.data.catalog:DATASET_NAMES")
    data: str | None = _opt(
        None, "your own data instead of --dataset: a folder of images (one sub-folder per class, or "
        "flat; train/ valid/ test/ sub-folders give its own split) or an .npz, .npy or .pt file of "
        "arrays (see docs/own-data.md)")
    image_size: int | None = _opt(
        None, "resize each image's shorter side to S and crop its centre S x S (default: keep the "
        "size; images of different sizes need it)")
    channels: int | None = _opt(
        None, "1 (grey) or 3 (colour): convert every image to this many channels (default: as the "
        "data are; a folder mixing grey and colour becomes colour)")
    split: str | None = _opt(
        None, "train,valid,test fractions for --data without a split of its own, cut from one seeded "
        "order that does not depend on --seed (default: 0.8,0.1,0.1)")
    skip_bad_images: bool = _opt(
        False, "skip unreadable images and files with unknown extensions in a --data folder (and say "
        "how many) instead of stopping at the first")
    data_kind: str | None = _opt(
        None, "recorded by fit: image-folder, array-file or catalogue:<name> (default: found from the "
        "data)")
    data_checksum: str | None = _opt(
        None, "recorded by fit: the content checksum of the data; evaluate and --resume refuse data "
        "that differ (default: not checked)")
    data_dir: str | None = _opt(
        None, "folder holding the data in torchvision's layout; also the download cache and the cache "
        "of decoded --data folders (default: $PYRO_VAE_DATA or ~/.cache/pyro-vae)")
    binarize: str | None = _opt(
        None, "dynamic: resample x ~ Bernoulli(intensity) each time an image is drawn; "
        "static: one fixed seeded binarization; none: intensities in [0, 1] (default: none for "
        "--likelihood discretized-logistic, else dynamic)",
        choices="pyro_vae.data.binarize:BINARIZATION_MODES")
    train_size: int | None = _opt(
        None, "use only the first N training images (for quick experiments); default: all")
    train_on_validation: bool = _opt(
        False, "train on the training and validation images together (MNIST: all 60,000, the standard "
        "split Burda et al. use); the validation metrics then measure training images")
    eval_size: int | None = _opt(
        None, "use only the first N validation and test images; default: all of them")
    _section("model")
    model: str = _opt(
        "vae", "vae: p(x, z); cvae: conditional VAE p(x, z | y), the label given; m2: semi-supervised "
        "M2 (Kingma et al. 2014), the label latent, observed for --labels images",
        choices="pyro_vae.variants:VARIANTS")
    labels: int | None = _opt(
        None, "--model m2: number of labelled training images, a class-balanced seeded subset "
        "(default: 100); the rest are used unlabelled")
    alpha: float = _opt(
        0.1, "--model m2: weight of the classification term alpha * E_labelled[-log q(y|x)] in units "
        "of the training-set size N (Kingma et al.: alpha = 0.1 N)", group="training")
    labelled_weight: str = _opt(
        "balanced", "--model m2: balanced weighs the labelled images (ELBO and classification term) as if "
        "there were as many as unlabelled ones, like batches of equal labelled and unlabelled parts; "
        "counted weighs every image once, Kingma et al.'s J_alpha taken literally",
        choices=("balanced", "counted"), group="training")
    labelled_steps: str = _opt(
        "paired", "--model m2: paired adds a labelled batch to every unlabelled batch's step (the labelled "
        "set cycled); interleaved gives each epoch one pass over the labelled set in steps of their own, "
        "spread evenly among the unlabelled steps, as Pyro's semi-supervised VAE tutorial does",
        choices=("paired", "interleaved"), group="training")
    likelihood: str = _opt(
        "bernoulli", "p(x|z): bernoulli (binary pixels), gaussian (fixed scale, see "
        "--gaussian-scale), gaussian-pixel-scale (one learned scale per pixel), "
        "gaussian-decoder-scale (the decoder outputs the scale), continuous-bernoulli, "
        "discretized-logistic (the 256 values of 8-bit pixels; results also in bits per dimension)",
        choices="pyro_vae.models.likelihoods:LIKELIHOODS")
    gaussian_scale: float = _opt(0.1, "the fixed standard deviation of --likelihood gaussian")
    latent_dim: int = _opt(32, "dimension D of the latent z")
    net: str = _opt("mlp", "encoder/decoder networks: mlp; conv (stride-2 conv + batch norm blocks "
                    "down to about 4x4, channels doubling; sized from the images); or gated-mlp "
                    "(Tomczak & Welling's gated dense layers, h = (W x + b) * sigmoid(V x + c))",
                    choices="pyro_vae.nets:ENCODERS")
    hidden: tuple[int, ...] = _opt(
        (512, 512), "hidden widths, comma-separated (the decoder mirrors the encoder); the conv "
        "nets use the last one as their dense width")
    activation: str = _opt("relu", "nonlinearity of the --net mlp hidden layers",
                           choices="pyro_vae.nets:ACTIVATIONS")
    init: str = _opt(
        "torch", "initialisation of every linear layer: torch (PyTorch's default), glorot (uniform, "
        "Glorot & Bengio 2010, zero biases: Burda et al.) or he (weights normal with std sqrt(2 / fan_in), "
        "biases as torch: Tomczak & Welling's code)", choices="pyro_vae.nets:INITIALIZERS")
    prior: str = _opt(
        "standard", "p(z): standard = N(0, I); learned = N(m, diag s^2) learned; mog = mixture of "
        "--prior-components learned Gaussians; vamp = VampPrior over --prior-components pseudo-inputs",
        choices="pyro_vae.models.priors:PRIORS")
    prior_components: int | None = _opt(
        None, "components K of --prior mog / vamp (default: 10 for mog, 500 for vamp)")
    guide: str = _opt(
        "diag", "q(z|x): diag = diagonal Normal; lowrank = Normal with covariance W W^T + diag "
        "(rank --guide-rank); iaf = inverse autoregressive flow (--flow-layers layers)",
        choices="pyro_vae.guides:GUIDES")
    guide_rank: int = _opt(4, "rank of the low-rank covariance factor of --guide lowrank")
    flow_layers: int = _opt(2, "number of affine autoregressive transforms of --guide iaf")
    flow_hidden: int = _opt(320, "hidden width of each IAF transform's autoregressive network")
    _section("training")  # the objective, then the optimisation
    elbo: str = _opt(
        "trace", "trace: Trace_ELBO (Monte-Carlo KL); meanfield: TraceMeanField_ELBO (analytic KL); "
        "iwae: the importance-weighted bound with K = --particles (Burda et al. 2015)",
        choices="pyro_vae.objectives:ELBOS")
    particles: int = _opt(1, "samples of z per image for the ELBO estimate (vectorized); with "
                          "--elbo iwae, the K of the bound")
    beta: float = _opt(1.0, "weight of the KL term (beta-VAE); 1 is the ELBO")
    warmup_epochs: float = _opt(
        0.0, "KL warm-up: beta rises linearly from 0 to --beta over this many epochs")
    epochs: int = _opt(30, "number of passes over the training set")
    batch_size: int = _opt(128, "images per optimizer step: the global batch, split evenly across "
                           "--devices x --num-nodes processes")
    lr: float = _opt(1e-3, "learning rate")
    optimizer: str = _opt(
        "adam", "one torch.optim.Adam over every parameter; clipped-adam also clips each gradient "
        "element to [-10, 10] first (as pyro.optim.ClippedAdam did)", choices="pyro_vae.engine.optim:OPTIMIZERS")
    lr_decay: float = _opt(
        0.95, "learning rate multiplied by this after each epoch (torch.optim.lr_scheduler.ExponentialLR); "
        "1 keeps it constant")
    jit: bool = _opt(False, "trace the ELBO with torch.jit once per batch shape (the KL weight and the "
                     "mini-batch scale enter as tensors): less Python per step, which small models feel most; "
                     "--elbo trace or meanfield, --model vae or cvae")
    adam_beta1: float = _opt(0.9, "Adam's beta1 (decay of the gradient's running mean)")
    adam_beta2: float = _opt(0.999, "Adam's beta2 (decay of the squared gradient's running mean)")
    adam_eps: float = _opt(1e-8, "Adam's epsilon (Burda et al.: 1e-4)")
    lr_schedule: str = _opt(
        "exponential", "exponential: --lr times --lr-decay per epoch; burda: Burda et al.'s 3^i passes at "
        "--lr * 10^(-i/7), i = 0..7 (3,280 passes in all; --lr-decay unused)",
        choices="pyro_vae.engine.optim:LR_SCHEDULES")
    early_stopping: int = _opt(
        0, "stop when the validation ELBO has not improved for this many epochs (0: never)")
    max_minutes: float | None = _opt(
        None, "stop training before the epoch that would end past this many minutes (of this "
        "invocation; a --resume gets its own); default: no limit")
    seed: int = _opt(0, "random seed: the same seed gives the same run on the same device")
    _section("devices")
    accelerator: str = _opt("auto", "auto (cuda, else mps, else cpu), cpu, cuda or mps",
                            choices="pyro_vae.engine.fabric:ACCELERATORS")
    devices: str = _opt("1", "processes (one device each) per node: a number, or auto (every GPU "
                        "of the node; 1 on a CPU)")
    num_nodes: int = _opt(1, "machines taking part (under torchrun or SLURM, which start the processes)")
    strategy: str = _opt("auto", "how processes share the work: auto (ddp for more than one process), "
                         "ddp, or ddp_find_unused_parameters_true", choices="pyro_vae.engine.fabric:STRATEGIES")
    precision: str = _opt("32-true", "32-true, bf16-mixed (networks in bfloat16, log-densities in float32) "
                          "or 16-mixed (float16 with loss scaling, GPUs)",
                          choices="pyro_vae.engine.fabric:PRECISIONS")
    device: str | None = _opt(None, "old name of --accelerator (auto, cpu or cuda); kept as an alias",
                              choices="pyro_vae.engine.fabric:ACCELERATORS")
    _section("output")
    out: str = _opt("runs/mnist", "output folder for config, metrics, checkpoints and pictures")
    tensorboard: bool = _opt(False, "also write TensorBoard scalars and images to OUT/tensorboard")
    eval_k: int = _opt(
        0, "after training, estimate the test log p(x) with this many importance samples "
        "(python -m pyro_vae.evaluate OUT --k K); 0 skips it")

    def __post_init__(self):
        problems = [f"--{_flag(f.name)} must be a finite number, got {getattr(self, f.name)}"
                    for f in dataclasses.fields(self)
                    if f.type == "float" and not math.isfinite(getattr(self, f.name))]
        if problems:  # NaN or infinity would slip through every range check below
            raise ConfigError("; ".join(problems))
        problems += self._data_problems()
        if (problem := seed_problem(self.seed, "--seed")) is not None:
            problems.append(problem)
        for name in ("latent_dim", "epochs", "batch_size", "particles", "guide_rank", "flow_layers",
                     "flow_hidden"):
            if getattr(self, name) < 1:
                problems.append(f"--{_flag(name)} must be at least 1, got {getattr(self, name)}")
        if self.eval_k < 0:
            problems.append(f"--eval-k must be >= 0, got {self.eval_k}")
        for name in ("train_size", "eval_size", "prior_components"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"--{_flag(name)} must be at least 1, got {value}")
        if not self.hidden or min(self.hidden) < 1:
            problems.append(f"--hidden needs positive widths, got {self.hidden}")
        for name in ("lr", "gaussian_scale"):
            if not getattr(self, name) > 0:
                problems.append(f"--{_flag(name)} must be positive, got {getattr(self, name)}")
        if self.beta < 0:
            problems.append(f"--beta must be >= 0, got {self.beta}")
        if self.warmup_epochs < 0:
            problems.append(f"--warmup-epochs must be >= 0, got {self.warmup_epochs}")
        if not 0 < self.lr_decay <= 1:
            problems.append(f"--lr-decay must be in (0, 1], got {self.lr_decay}")
        problems += self._literature_problems()
        problems += self._label_model_problems()
        if self.elbo == "iwae" and (self.beta != 1 or self.warmup_epochs > 0):
            problems.append("--elbo iwae is the importance-weighted bound of log p(x); it takes no "
                            "--beta or --warmup-epochs (use --elbo trace for those)")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            registry = field_registry(f)
            if registry is not None and getattr(registry, "arguments", None) is not None:
                # one's own component: an import path, a name registered from outside, or (from
                # Python) a class; config.json records what rebuilds it in a fresh process
                if isinstance(value, str) and ":" not in value and value not in registry:
                    problems.append(f"--{_flag(f.name)} {value!r} is not one of: {', '.join(registry.names())} "
                                    f"(or the import path of your own, module.sub:Name)")
                    continue
                try:
                    object.__setattr__(self, f.name, registry.record(value))
                except ConfigError as e:
                    problems.append(f"--{_flag(f.name)}: {e}")
                continue
            choices = field_choices(f)
            if choices and value not in choices:
                problems.append(f"--{_flag(f.name)} {value!r} is not one of: {', '.join(choices)}")
        if not problems:
            problems += self._engine_problems()
        if problems:
            raise ConfigError("; ".join(problems))

    def _data_problems(self) -> list[str]:
        """Checks of the data fields; fills in the defaults that depend on other fields (the dataset
        without --data, the binarization for the likelihood), so config.json records them."""
        problems = []
        if self.data is not None and self.dataset is not None:
            problems.append(f"give --data (your own data) or --dataset (a named data set), not both: "
                            f"--data {self.data}, --dataset {self.dataset}")
        if self.data is None and self.dataset is None:
            object.__setattr__(self, "dataset", "mnist")
        from .models.likelihoods import LIKELIHOODS, models_pixel_values

        pixel_values = self.likelihood in LIKELIHOODS and models_pixel_values(self.likelihood)
        if self.binarize is None:
            object.__setattr__(self, "binarize", "none" if pixel_values else "dynamic")
        elif pixel_values and self.binarize != "none":
            problems.append(f"--likelihood {self.likelihood} models the 256 values of 8-bit pixels; "
                            f"use --binarize none, not {self.binarize}")
        if self.channels is not None and self.channels not in (1, 3):
            problems.append(f"--channels must be 1 (grey) or 3 (colour), got {self.channels}")
        if self.image_size is not None and self.image_size < 1:
            problems.append(f"--image-size must be at least 1, got {self.image_size}")
        if self.split is not None and self.data is None:
            problems.append("--split cuts --data without a split of its own; the named data sets have "
                            "their own (drop --split)")
        return problems

    def _literature_problems(self) -> list[str]:
        problems = []
        if self.activation != "relu" and isinstance(self.net, str) and self.net != "mlp" and ":" not in self.net:
            problems.append(f"--activation applies to --net mlp; --net {self.net} has its own "
                            f"nonlinearities (drop --activation {self.activation})")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                problems.append(f"--{_flag(name)} must be in [0, 1), got {getattr(self, name)}")
        if not self.adam_eps > 0:
            problems.append(f"--adam-eps must be positive, got {self.adam_eps}")
        if self.lr_schedule == "burda" and self.lr_decay != FitConfig.lr_decay:
            problems.append("--lr-schedule burda sets the learning rate of every pass; drop --lr-decay "
                            "(it applies to --lr-schedule exponential)")
        if self.early_stopping < 0:
            problems.append(f"--early-stopping must be >= 0, got {self.early_stopping}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            problems.append(f"--max-minutes must be positive, got {self.max_minutes}")
        return problems

    def _label_model_problems(self) -> list[str]:
        """What the model kind (a variant, :mod:`pyro_vae.variants`) refuses in this config."""
        from .variants import VARIANTS

        if self.model not in VARIANTS:
            return []  # named by the choices check
        problems = VARIANTS.get(self.model).config_problems(self)
        if self.labels is not None and self.labels < 1:
            problems.append(f"--labels must be at least 1, got {self.labels}")
        if not self.alpha >= 0:
            problems.append(f"--alpha must be >= 0, got {self.alpha}")
        return problems

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
    def labelled(self) -> int:
        """--model m2's number of labelled training images."""
        return DEFAULT_LABELS if self.labels is None else self.labels

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> "FitConfig":
        """Build from a mapping whose keys may use dashes or underscores; unknown keys are errors."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        unknown = []
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in known:
                unknown.append(key)
                continue
            values[name] = coerce(known[name], value, source)
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; known keys: "
                f"{', '.join(_flag(n) for n in known)}")
        return cls(**values)

    @property
    def components(self) -> int:
        """K of a mixture prior: --prior-components, else the prior's own default."""
        if self.prior_components is not None:
            return self.prior_components
        return DEFAULT_PRIOR_COMPONENTS.get(self.prior, 1)

    def replace(self, **changes) -> "FitConfig":
        return dataclasses.replace(self, **changes)


def _flag(name: str) -> str:
    return name.replace("_", "-")


def coerce(f: dataclasses.Field, value: Any, source: str) -> Any:
    """Convert a value from JSON/YAML/the command line to the field's type, or explain why not."""
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if value is None:
            if "None" in kind:
                return None
            raise ValueError("a value is required")
        if isinstance(value, (list, dict)) and not kind.startswith("tuple"):
            raise ValueError(f"expected a single value, got a {type(value).__name__}")
        if isinstance(value, bool) and not kind.startswith("bool"):
            # YAML's `epochs: true` is Python's True == 1; never take a yes/no for a number
            raise ValueError(f"expected {'a number' if kind[:3] in ('int', 'flo') else 'text'}, got {value}")
        if kind.startswith("tuple"):
            if isinstance(value, str):
                value = [v for v in value.replace(" ", "").split(",") if v]
            return tuple(int(v) for v in value)
        if kind.startswith("bool"):
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError("expected true or false")
            return bool(value)
        if kind.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("expected a whole number")
            if isinstance(value, str):
                value = value.strip()
            return int(value)
        if kind.startswith("float"):
            return float(value)
        if kind.startswith("str"):
            return str(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: bad value {value!r} for {_flag(f.name)}: {e}") from None
    return value


def field_registry(f: dataclasses.Field):
    """The registry (or tuple) a field's ``choices="module:NAME"`` names, imported now; None for
    a field without one."""
    choices = f.metadata.get("choices")
    if not isinstance(choices, str):
        return None
    import importlib

    module, name = choices.split(":")
    return getattr(importlib.import_module(module), name)


def field_choices(f: dataclasses.Field) -> tuple[str, ...] | None:
    """A field's allowed values: its registry's names (``choices="module:NAME"``, read lazily, so
    a registry is the only list of a choice, and a name registered before it is read is one), or
    a literal tuple, or None. Priors, guides, likelihoods and networks also take import paths."""
    registry = field_registry(f)
    if registry is not None:
        return tuple(registry.names() if hasattr(registry, "names") else registry)
    return f.metadata.get("choices")


def config_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(FitConfig))


def seed_problem(seed, flag: str) -> str | None:
    """Why ``seed`` is not a usable seed (None if it is): a whole number in [0, 2^32)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        return f"{flag} must be a whole number from 0 to {SEED_LIMIT - 1:,} (2^32 - 1), got {seed}"
    return None


def check_seed(seed, flag: str = "--seed") -> int:
    """``seed`` if it lies in [0, 2^32); :class:`ConfigError` naming ``flag`` if not."""
    if (problem := seed_problem(seed, flag)) is not None:
        raise ConfigError(problem)
    return seed


def read_run_config(run_dir: str | Path, what: str = "") -> FitConfig:
    """The :class:`FitConfig` saved in ``run_dir/config.json``, or an error that names the file and
    what is wrong with it (missing, unreadable, not JSON, not a mapping, bad values).

    ``what`` prefixes the messages, e.g. ``"--resume runs/a"``."""
    from .errors import CheckpointError

    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    prefix = f"{what}: " if what else ""
    if not path.is_file():
        raise CheckpointError(f"{prefix}{run_dir}: no config.json there; is it a folder written by "
                              f"`python -m pyro_vae.fit --out {run_dir}`?")
    damaged = (f"it is written by `python -m pyro_vae.fit` and rebuilds the model; restore it from a "
               f"copy, or train again (the checkpoints also hold the run's configuration)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CheckpointError(f"{prefix}cannot read {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{prefix}{path} is corrupt: not valid JSON ({e}); {damaged}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{prefix}{path} is corrupt: it holds a JSON {type(data).__name__}, not a "
                              f"mapping of option names to values; {damaged}")
    try:
        return FitConfig.from_dict(data, source=str(path))
    except ConfigError as e:
        if "cannot import" in str(e):  # a user's own component whose module is not on the path
            raise CheckpointError(f"{prefix}{path} names a component this session cannot build: {e}; "
                                  f"put its module on the Python path (PYTHONPATH) and try again") from None
        raise CheckpointError(f"{prefix}{e}; {damaged}") from None


def check_checkpoint_config(config: FitConfig, checkpoint_config, path: str | Path) -> None:
    """Raise :class:`CheckpointError` unless the configuration stored inside the checkpoint at
    ``path`` describes the same run as ``config`` (the run's config.json), up to the options a
    resumed run may change (:data:`RESUMABLE_CHANGES`).

    Two processes writing one folder could leave config.json from one run and the checkpoints from
    another; loading such a mix gives a model with the wrong prior or likelihood and nonsense log
    p(x). This check catches it."""
    from .errors import CheckpointError

    if not isinstance(checkpoint_config, Mapping):
        raise CheckpointError(f"checkpoint {path} holds no configuration; it was not written by "
                              f"`python -m pyro_vae.fit`")
    try:
        own = FitConfig.from_dict(checkpoint_config, source=f"the configuration inside {path}")
    except ConfigError as e:
        raise CheckpointError(f"{e}; the checkpoint does not belong to this version of pyro-vae or "
                              f"this run") from None
    differ = [f"{_flag(f.name)} (config.json: {getattr(config, f.name)!r}, checkpoint: "
              f"{getattr(own, f.name)!r})"
              for f in dataclasses.fields(FitConfig)
              if f.name not in RESUMABLE_CHANGES and getattr(config, f.name) != getattr(own, f.name)]
    if differ:
        raise CheckpointError(
            f"checkpoint {path} belongs to another run than its folder's config.json: {'; '.join(differ)}. "
            f"Two runs wrote into one folder; train again into an empty --out folder")
