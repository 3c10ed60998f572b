"""The frozen configuration of a training run, saved as ``config.json`` next to every checkpoint.

One dataclass is the single source of truth: the CLI's flags, their help and defaults, the
``--config FILE`` keys and the JSON that rebuilds a model are all generated from its fields.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError


DEFAULT_PRIOR_COMPONENTS = {"mog": 10, "vamp": 500}  # vamp: Tomczak & Welling's K


def _opt(default, help: str, **meta):
    return field(default=default, metadata={"help": help, **meta})


DEFAULT_LABELS = 100  # --model m2 without --labels: Kingma et al.'s smallest labelled set


@dataclass(frozen=True)
class FitConfig:
    """Everything that defines a run. Defaults give a good MNIST model in about 5 CPU minutes."""

    # data
    dataset: str = _opt("mnist", "data set to train on", choices=("mnist", "fashion-mnist"))
    data_dir: str | None = _opt(
        None, "folder holding the data in torchvision's layout; also the download cache "
        "(default: $PYRO_VAE_DATA or ~/.cache/pyro-vae)")
    binarize: str = _opt(
        "dynamic", "dynamic: resample x ~ Bernoulli(intensity) each time an image is drawn; "
        "static: one fixed seeded binarization; none: intensities in [0, 1]",
        choices=("dynamic", "static", "none"))
    train_size: int | None = _opt(
        None, "use only the first N training images (for quick experiments); default: all 50,000")
    eval_size: int | None = _opt(
        None, "use only the first N validation and test images; default: all 10,000 of each")
    # model
    model: str = _opt(
        "vae", "vae: p(x, z); cvae: conditional VAE p(x, z | y), the label given; m2: semi-supervised "
        "M2 (Kingma et al. 2014), the label latent, observed for --labels images",
        choices=("vae", "cvae", "m2"))
    labels: int | None = _opt(
        None, "--model m2: number of labelled training images, a class-balanced seeded subset "
        "(default: 100); the rest are used unlabelled")
    alpha: float = _opt(
        0.1, "--model m2: weight of the classification term alpha * E_labelled[-log q(y|x)] in units "
        "of the training-set size N (Kingma et al.: alpha = 0.1 N)")
    labelled_weight: str = _opt(
        "balanced", "--model m2: balanced weighs the labelled images (ELBO and classification term) as if "
        "there were as many as unlabelled ones, like batches of equal labelled and unlabelled parts; "
        "counted weighs every image once, Kingma et al.'s J_alpha taken literally",
        choices=("balanced", "counted"))
    likelihood: str = _opt(
        "bernoulli", "p(x|z): bernoulli (binary pixels), gaussian (fixed scale, see "
        "--gaussian-scale), gaussian-pixel-scale (one learned scale per pixel), "
        "gaussian-decoder-scale (the decoder outputs the scale), continuous-bernoulli",
        choices=("bernoulli", "gaussian", "gaussian-pixel-scale", "gaussian-decoder-scale",
                 "continuous-bernoulli"))
    gaussian_scale: float = _opt(0.1, "the fixed standard deviation of --likelihood gaussian")
    latent_dim: int = _opt(32, "dimension D of the latent z")
    net: str = _opt("mlp", "encoder/decoder networks: mlp, conv (conv + batch norm) or gated-mlp "
                    "(Tomczak & Welling's gated dense layers, h = (W x + b) * sigmoid(V x + c))",
                    choices=("mlp", "conv", "gated-mlp"))
    hidden: tuple[int, ...] = _opt(
        (512, 512), "hidden widths, comma-separated (the decoder mirrors the encoder); the conv "
        "nets use the last one as their dense width")
    prior: str = _opt(
        "standard", "p(z): standard = N(0, I); learned = N(m, diag s^2) learned; mog = mixture of "
        "--prior-components learned Gaussians; vamp = VampPrior over --prior-components pseudo-inputs",
        choices=("standard", "learned", "mog", "vamp"))
    prior_components: int | None = _opt(
        None, "components K of --prior mog / vamp (default: 10 for mog, 500 for vamp)")
    guide: str = _opt(
        "diag", "q(z|x): diag = diagonal Normal; lowrank = Normal with covariance W W^T + diag "
        "(rank --guide-rank); iaf = inverse autoregressive flow (--flow-layers layers)",
        choices=("diag", "lowrank", "iaf"))
    guide_rank: int = _opt(4, "rank of the low-rank covariance factor of --guide lowrank")
    flow_layers: int = _opt(2, "number of affine autoregressive transforms of --guide iaf")
    flow_hidden: int = _opt(320, "hidden width of each IAF transform's autoregressive network")
    # objective
    elbo: str = _opt(
        "trace", "trace: Trace_ELBO (Monte-Carlo KL); meanfield: TraceMeanField_ELBO (analytic KL); "
        "iwae: the importance-weighted bound with K = --particles (Burda et al. 2015)",
        choices=("trace", "meanfield", "iwae"))
    particles: int = _opt(1, "samples of z per image for the ELBO estimate (vectorized); with "
                          "--elbo iwae, the K of the bound")
    beta: float = _opt(1.0, "weight of the KL term (beta-VAE); 1 is the ELBO")
    warmup_epochs: float = _opt(
        0.0, "KL warm-up: beta rises linearly from 0 to --beta over this many epochs")
    # optimisation
    epochs: int = _opt(30, "number of passes over the training set")
    batch_size: int = _opt(128, "images per SVI step")
    lr: float = _opt(1e-3, "learning rate")
    optimizer: str = _opt("adam", "pyro.optim optimizer", choices=("adam", "clipped-adam"))
    lr_decay: float = _opt(
        0.95, "learning rate multiplied by this after each epoch (pyro.optim.ExponentialLR); "
        "1 keeps it constant")
    # settings of published experiments (python -m pyro_vae.reproduce)
    activation: str = _opt("relu", "nonlinearity of the --net mlp hidden layers",
                           choices=("relu", "tanh", "softplus"))
    init: str = _opt(
        "torch", "initialisation of every linear layer: torch (PyTorch's default), glorot (uniform, "
        "Glorot & Bengio 2010, zero biases: Burda et al.) or he (weights normal with std sqrt(2 / fan_in), "
        "biases as torch: Tomczak & Welling's code)", choices=("torch", "glorot", "he"))
    adam_beta1: float = _opt(0.9, "Adam's beta1 (decay of the gradient's running mean)")
    adam_beta2: float = _opt(0.999, "Adam's beta2 (decay of the squared gradient's running mean)")
    adam_eps: float = _opt(1e-8, "Adam's epsilon (Burda et al.: 1e-4)")
    lr_schedule: str = _opt(
        "exponential", "exponential: --lr times --lr-decay per epoch; burda: Burda et al.'s 3^i passes at "
        "--lr * 10^(-i/7), i = 0..7 (3,280 passes in all; --lr-decay unused)",
        choices=("exponential", "burda"))
    early_stopping: int = _opt(
        0, "stop when the validation ELBO has not improved for this many epochs (0: never)")
    max_minutes: float | None = _opt(
        None, "stop training before the epoch that would end past this many minutes (of this "
        "invocation; a --resume gets its own); default: no limit")
    train_on_validation: bool = _opt(
        False, "train on the training and validation images together (MNIST: all 60,000, the standard "
        "split Burda et al. use); the validation metrics then measure training images")
    seed: int = _opt(0, "random seed: the same seed gives the same run on the same device")
    device: str = _opt("auto", "auto (cuda if available), cpu or cuda", choices=("auto", "cpu", "cuda"))
    # output
    out: str = _opt("runs/mnist", "output folder for config, metrics, checkpoints and pictures")
    tensorboard: bool = _opt(False, "also write TensorBoard scalars and images to OUT/tensorboard")
    eval_k: int = _opt(
        0, "after training, estimate the test log p(x) with this many importance samples "
        "(python -m pyro_vae.evaluate OUT --k K); 0 skips it")

    def __post_init__(self):
        problems = []
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
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                problems.append(
                    f"--{_flag(f.name)} {getattr(self, f.name)!r} is not one of: {', '.join(choices)}")
        if problems:
            raise ConfigError("; ".join(problems))

    def _literature_problems(self) -> list[str]:
        problems = []
        if self.activation != "relu" and self.net != "mlp":
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
        problems = []
        if self.labels is not None and self.model != "m2":
            problems.append(f"--labels picks the labelled images of --model m2; this run is --model "
                            f"{self.model} (drop --labels, or use --model m2)")
        if self.labels is not None and self.labels < 1:
            problems.append(f"--labels must be at least 1, got {self.labels}")
        if not self.alpha >= 0:
            problems.append(f"--alpha must be >= 0, got {self.alpha}")
        allowed = {"cvae": ("standard", "learned"), "m2": ("standard", "learned", "mog")}.get(self.model)
        if allowed and self.prior not in allowed:
            problems.append(f"--model {self.model} takes --prior {' or '.join(allowed)}, not {self.prior} "
                            "(the VampPrior's pseudo-inputs have no labels)")
        if self.model == "m2" and self.elbo != "trace":
            problems.append(f"--model m2 sums over the unknown labels with TraceEnum_ELBO; use --elbo trace, "
                            f"not {self.elbo}")
        return problems

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
            return int(value)
        if kind.startswith("float"):
            return float(value)
        if kind.startswith("str"):
            return str(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: bad value {value!r} for {_flag(f.name)}: {e}") from None
    return value


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON file of option keys (dashes or underscores)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - any parse failure is the user's file
        raise ConfigError(f"--config {path}: cannot parse it as {'JSON' if path.suffix == '.json' else 'YAML'}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of option names to values, got {type(data).__name__}")
    return data


def config_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(FitConfig))
