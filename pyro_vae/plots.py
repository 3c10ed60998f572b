"""Pictures written next to the numbers: samples, reconstructions, curves, latent maps,
interpolations, and the evaluation's k-hat histogram and log p_K(x)-against-K curve. Every PNG is
written atomically. The data come in as arguments (a VAE object, tensors, records); nothing here
imports the engine, the variants or the evaluation.

matplotlib is imported lazily, and each figure is a :class:`matplotlib.figure.Figure` on its own
Agg canvas, never a pyplot figure: nothing here changes matplotlib's backend or pyplot's global
state, so a notebook's inline figures keep working while training writes its pictures."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import make_grid, save_image

from .atomic import atomic_path

# What the rows of reconstructions.png show, in turn.
ROW_LABELS = ("original", "reconstruction")
# Side of the decoded grids over the latent plane (2-D latents).
LATENT_GRID_SIDE = 20
# The posterior grid spans the posterior mean +- this many posterior standard deviations.
POSTERIOR_GRID_STDS = 4.0


def figure(figsize: tuple[float, float], ncols: int = 1, **options):
    """A Figure on its own Agg canvas (no pyplot, no backend switch) and its ``ncols`` Axes;
    ``options`` go to :class:`matplotlib.figure.Figure` (e.g. ``layout="constrained"``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, **options)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, (axes if ncols > 1 else axes[0])


def save_grid(images: torch.Tensor, path: str | Path, nrow: int, row_labels: Sequence[str] | None = None) -> Path:
    """Save images (N, C, H, W) in [0, 1] as one PNG grid, ``nrow`` images per row (2 pixels of
    white between them); ``row_labels``, one per row of the grid, are written in a white column on
    its left. Returns ``path``."""
    path = Path(path)
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
    with atomic_path(path) as tmp:
        if row_labels is None:
            save_image(grid, tmp, format="png")
        else:
            _labelled(grid, images.shape[2], list(row_labels)).save(tmp, format="png")
    return path


def label_width(labels: Sequence[str]) -> int:
    """Pixels of the white column that :func:`save_grid` adds on the left for ``labels``."""
    from PIL import Image, ImageDraw, ImageFont

    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    return int(max(draw.textlength(label, font=ImageFont.load_default()) for label in labels)) + 8


def _labelled(grid: torch.Tensor, height: int, labels: list[str]):
    """The grid (C, H, W) as a PIL image with ``labels`` (one per row of images ``height`` high)
    in black on a white column on its left."""
    from PIL import Image, ImageDraw, ImageFont

    rows = (grid.shape[1] - 2) // (height + 2)
    if len(labels) != rows:
        raise ValueError(f"the grid has {rows} rows of images but {len(labels)} label(s) were given")
    pixels = (grid.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    picture = Image.fromarray(pixels).convert("RGB")
    font = ImageFont.load_default()
    out = Image.new("RGB", (picture.width + label_width(labels), picture.height), "white")
    out.paste(picture, (out.width - picture.width, 0))
    draw = ImageDraw.Draw(out)
    for row, label in enumerate(labels):
        draw.text((4, 2 + row * (height + 2) + height // 2), label, fill="black", font=font, anchor="lm")
    return out


def save_figure(fig, path: str | os.PathLike, *, tight: bool = True) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (a temporary file beside it, then a rename);
    ``tight``: at 100 dpi, cropped to what is drawn (else as the figure is laid out)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if tight:
            fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
        else:
            fig.savefig(tmp, format="png")
    return path


def sample_grid(vae, path: Path, n: int = 64) -> Path:
    """A grid of E[x|z] for z ~ p(z)."""
    return save_grid(vae.sample(n), path, nrow=int(n**0.5))


def reconstruction_grid(vae, x: torch.Tensor, path: Path, y: torch.Tensor | None = None) -> Path:
    """Test originals above their reconstructions, up to 16 a row, each row labelled
    (:data:`ROW_LABELS`)."""
    recon = vae.reconstruct(x, y)
    n = x.shape[0]
    per_row = min(n, 16)
    rows = []
    for start in range(0, n, per_row):
        for images in (x[start : start + per_row], recon[start : start + per_row]):
            blank = images.new_zeros((per_row - images.shape[0], *images.shape[1:]))  # a short last row
            rows.append(torch.cat([images, blank]))
    labels = ROW_LABELS * (len(rows) // 2)
    return save_grid(torch.cat(rows), path, nrow=per_row, row_labels=labels)


IMPUTATION_ROW_LABELS = ("original", "masked", "imputed")
MISSING_SHADE = 0.5  # intensity that shows a missing value in the "masked" row


def imputation_grid(vae, x: torch.Tensor, mask: torch.Tensor, path: Path, k: int = 100, seed: int = 0) -> Path:
    """Test originals, the same with their missing values shown grey, and the imputed images
    (``vae.impute``: the conditional mean of the missing values, the observed ones kept), up to 16
    a row, each row labelled (:data:`IMPUTATION_ROW_LABELS`)."""
    imputed = vae.impute(x, mask, k=k, seed=seed)
    m = mask.to(x.dtype)
    shown = x * m + MISSING_SHADE * (1 - m)
    n = x.shape[0]
    per_row = min(n, 16)
    rows = []
    for start in range(0, n, per_row):
        for images in (x, shown, imputed):
            part = images[start : start + per_row]
            blank = part.new_zeros((per_row - part.shape[0], *part.shape[1:]))  # a short last row
            rows.append(torch.cat([part, blank]))
    labels = IMPUTATION_ROW_LABELS * (len(rows) // 3)
    return save_grid(torch.cat(rows), path, nrow=per_row, row_labels=labels)


def interpolation_grid(vae, x_from: torch.Tensor, x_to: torch.Tensor, path: Path, steps: int = 10) -> Path:
    """Each row decodes z = (1 - t) mu(x_from) + t mu(x_to) for t in [0, 1]."""
    z0, z1 = vae.posterior_mean(x_from), vae.posterior_mean(x_to)  # (R, D) each
    t = torch.linspace(0, 1, steps, device=z0.device)[None, :, None]  # (1, S, 1)
    z = ((1 - t) * z0[:, None] + t * z1[:, None]).reshape(-1, z0.shape[-1])  # (R*S, D)
    with torch.no_grad():
        images = vae.model.mean_image(z)
    return save_grid(images, path, nrow=steps)


def _posterior_std(vae, x: torch.Tensor) -> torch.Tensor:
    q = vae.encode(x)
    try:
        return q.stddev
    except NotImplementedError:
        return q.sample((256,)).std(0)


def latent_maps(
    vae, x: torch.Tensor, labels: torch.Tensor, out_dir: Path, condition: torch.Tensor | None = None
) -> list[Path]:
    """Latent pictures. 2-D latents: the decoded grid over the prior's quantiles, a decoded grid
    of +-4 posterior std around one test image's posterior mean, and the posterior means coloured
    by label. Higher-D: a 2-D PCA of the test posterior means coloured by label. Conditional
    models encode x given ``condition`` (CVAE: the true labels; M2: None, its classifier's) and
    get the scatter map only: their decoded planes would need a label too."""
    written = []
    with torch.no_grad():
        means = vae.posterior_mean(x, condition)  # (N, D)
    latent_dim = means.shape[-1]
    if latent_dim == 2 and not vae.conditional:
        side = LATENT_GRID_SIDE
        quantiles = torch.linspace(0.05, 0.95, side, device=means.device)
        axis = torch.distributions.Normal(0.0, 1.0).icdf(quantiles)  # prior N(0,1) quantiles  (S,)
        written.append(_decode_plane(vae, axis, axis.flip(0), out_dir / "latent_grid.png"))
        mu, std = means[0], _posterior_std(vae, x[:1])[0]
        offsets = torch.linspace(-POSTERIOR_GRID_STDS, POSTERIOR_GRID_STDS, side, device=mu.device)
        written.append(
            _decode_plane(
                vae, mu[0] + offsets * std[0], (mu[1] + offsets * std[1]).flip(0), out_dir / "latent_posterior_grid.png"
            )
        )
        coords, title = means, "posterior means E_q[z|x] (test images)"
        axis_labels = ("z_1", "z_2")
    elif latent_dim == 2:
        coords, title = means, "posterior means E_q[z|x, y] (test images)"
        axis_labels = ("z_1", "z_2")
    else:
        centred = means - means.mean(0)
        _, s, v = torch.linalg.svd(centred, full_matrices=False)
        coords = centred @ v[:2].T  # (N, 2)
        explained = (s[:2] ** 2 / (s**2).sum()).tolist()
        title = f"PCA of the {latent_dim}-D posterior means (test images)"
        axis_labels = (f"PC 1 ({explained[0]:.0%} of variance)", f"PC 2 ({explained[1]:.0%})")
    written.append(scatter_by_label(coords.cpu(), labels.cpu(), title, axis_labels, out_dir / "latent_map.png"))
    return written


def _decode_plane(vae, xs: torch.Tensor, ys: torch.Tensor, path: Path) -> Path:
    """Decode the grid z = (xs[j], ys[i]); row i, column j."""
    zx, zy = torch.meshgrid(xs, ys, indexing="xy")  # (S, S) each
    z = torch.stack([zx.reshape(-1), zy.reshape(-1)], dim=-1)  # (S*S, 2)
    with torch.no_grad():
        images = vae.model.mean_image(z)
    return save_grid(images, path, nrow=len(xs))


def scatter_by_label(coords, labels, title, axis_labels, path: Path) -> Path:
    """Points (N, 2) coloured by their label (0..9), with a colour bar."""
    fig, ax = figure((6.5, 5.5))
    points = ax.scatter(coords[:, 0], coords[:, 1], c=labels, cmap="tab10", s=4, alpha=0.7, vmin=-0.5, vmax=9.5)
    fig.colorbar(points, ax=ax, ticks=range(10), label="label")
    ax.set_title(title)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    return save_figure(fig, path)


def label_sample_grid(vae, path: Path, per_label: int = 10) -> Path:
    """Row c: ``per_label`` images E[x | z, y=c], z ~ p(z | y=c), for every label c."""
    y = torch.arange(vae.num_classes, device=vae.device).repeat_interleave(per_label)
    return save_grid(vae.sample(y.shape[0], label=y), path, nrow=per_label)


def analogy_grid(
    vae, path: Path, columns: int = 12, sources: torch.Tensor | None = None, source_labels: torch.Tensor | None = None
) -> Path:
    """The analogies figure of Kingma et al. (2014): row c decodes every column's z with label c,
    so along a column the style stays and the digit changes. With ``sources`` (test images) the
    z of a column is E_q[z | x, y] of that image (given ``source_labels``, else the classifier's
    label for M2), standardized under a per-label prior (``VAE.styles_for_every_label``), and the
    images form the top row; else z comes from the prior, one draw per
    column shared by all labels (per-label priors share the noise: z = m_y + s_y * eps)."""
    labels = torch.arange(vae.num_classes, device=vae.device)
    with torch.no_grad():
        if sources is not None:
            sources = sources.to(vae.device)
            given = vae.labels_for(sources, source_labels)  # CVAE: the true labels; M2: q(y|x)'s
            z = vae.styles_for_every_label(vae.posterior_mean(sources, given), given)  # (C, N, D)
        else:
            z = vae.shared_style_latents(columns)  # (C, N, D)
        n = z.shape[-2]
        y = labels[:, None].expand(len(labels), n)  # (C, N)
        images = vae.model.mean_image(z.reshape(-1, z.shape[-1]), y.reshape(-1))  # (C*N, ...)
    if sources is not None:
        images = torch.cat([sources[:n], images])
    return save_grid(images, path, nrow=n)


def confusion_matrix(
    true: torch.Tensor, predicted: torch.Tensor, path: Path, title: str = "", num_classes: int = 10
) -> Path:
    """Counts of (true label, predicted label), with the accuracy in the title."""
    counts = torch.zeros(num_classes, num_classes, dtype=torch.long)
    counts.index_put_((true.long(), predicted.long()), torch.ones_like(true, dtype=torch.long), accumulate=True)
    accuracy = counts.diag().sum().item() / max(1, counts.sum().item())
    fig, ax = figure((6.5, 5.5))
    shown = ax.imshow(counts.numpy(), cmap="Blues")
    fig.colorbar(shown, ax=ax, label="images")
    for i in range(num_classes):
        for j in range(num_classes):
            value = int(counts[i, j])
            if value:
                ax.text(
                    j,
                    i,
                    str(value),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if value > counts.max().item() / 2 else "black",
                )
    ax.set_xticks(range(num_classes))
    ax.set_yticks(range(num_classes))
    ax.set_xlabel("predicted label argmax q(y|x)")
    ax.set_ylabel("true label")
    ax.set_title(f"{title}\naccuracy {accuracy:.2%}, error {1 - accuracy:.2%}".strip())
    return save_figure(fig, path)


def training_curves(records: Sequence[dict], path: Path) -> Path:
    """ELBO, reconstruction and KL (nats per image) against epoch, for each evaluated split."""
    panels = [("elbo", "ELBO"), ("recon", "reconstruction  E_q[log p(x|z)]"), ("kl", "KL(q(z|x) || p(z))")]
    if records and "test_accuracy" in records[-1]:  # M2: the classifier q(y|x)
        panels.append(("accuracy", "accuracy of argmax q(y|x)"))
    fig, axes = figure((5 * len(panels), 4), ncols=len(panels))
    epochs = [r["epoch"] for r in records]
    for ax, (term, label) in zip(axes, panels):
        for split in ("train", "valid", "test"):
            key = f"{split}_{term}"
            if all(key in r for r in records):
                ax.plot(epochs, [r[key] for r in records], marker="o", markersize=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel("fraction of images" if term == "accuracy" else "nats per image")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path)


# -- the evaluation's pictures ----------------------------------------------------------------


def plot_khat_histogram(
    khat, path: str | os.PathLike, *, title: str | None = None, good: float = 0.5, bad: float = 0.7
) -> Path:
    """Histogram of per-image Pareto k-hat with lines at ``good`` and ``bad`` (Vehtari et al.'s
    0.5 and 0.7, as :mod:`pyro_vae.evaluation.diagnostics` uses them); returns the PNG's path.

    Non-finite values (NaN: undefined, -inf: constant weights, +inf: a few weights dominate)
    cannot be binned; they are counted in the legend instead.
    """
    khat = np.asarray(khat, dtype=np.float64)
    finite = khat[np.isfinite(khat)]
    fig, ax = figure((6, 4), dpi=100, layout="constrained")
    bins = np.linspace(min(finite.min(initial=0.0), 0.0) - 0.05, max(finite.max(initial=1.0), 1.0) + 0.05, 41)
    ax.hist(finite, bins=bins, color="0.55", edgecolor="white")
    ax.axvline(good, color="tab:orange", linestyle="--", label=f"k = {good}")
    ax.axvline(bad, color="tab:red", linestyle="--", label=f"k = {bad}")
    share = np.mean(khat[~np.isnan(khat)] > bad) if (~np.isnan(khat)).any() else np.nan
    extra = (
        f"{int(np.isnan(khat).sum())} undefined, {int(np.isneginf(khat).sum())} constant, "
        f"{int(np.isposinf(khat).sum())} infinite"
    )
    ax.plot([], [], " ", label=extra)
    ax.set_xlabel("Pareto k-hat of the importance weights (per image)")
    ax.set_ylabel("images")
    ax.set_title(title or f"PSIS k-hat: {100 * share:.1f}% of {khat.size} images above {bad}")
    ax.legend(loc="upper right", fontsize="small")
    return save_figure(fig, path, tight=False)


def plot_log_px_against_k(
    curve, path: str | os.PathLike, *, exact: float | None = None, title: str | None = None
) -> Path:
    """Mean log p_K(x) ± standard error against K (log axis); returns the PNG's path.

    ``curve``: a :class:`pyro_vae.evaluation.LogPxCurve` (its ``ks``, ``log_px`` (images, K's),
    ``mean()`` and ``stderr()``). ``exact``: a known mean log p(x) to draw as a line (e.g. a
    linear-Gaussian model's).
    """
    fig, ax = figure((6, 4), dpi=100, layout="constrained")
    ks = np.asarray(curve.ks)
    ax.errorbar(
        ks,
        curve.mean(),
        yerr=np.nan_to_num(curve.stderr()),
        marker="o",
        capsize=3,
        label=f"log p_K(x), {curve.log_px.shape[0]} images",
    )
    if exact is not None:
        ax.axhline(exact, color="tab:green", linestyle="--", label="exact log p(x)")
    ax.set_xscale("log")
    ax.set_xlabel("K (importance samples, nested)")
    ax.set_ylabel("mean log p_K(x) [nats]")
    ax.set_title(title or "Importance-weighted estimate of log p(x) against K")
    ax.legend(loc="lower right", fontsize="small")
    return save_figure(fig, path, tight=False)
