"""Every notebook runs top to bottom (small-data mode), shows the figure of every cell meant to
plot (tagged ``plot``), keeps torch to one thread, and is committed without outputs."""

import base64
import io
import json
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from PIL import Image, ImageDraw

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
TIMEOUT_S = 1200  # per cell: generous, a loaded 2-core machine once needed more than 600 s
PLOT_TAG = "plot"  # cell tag: this cell must leave an image in its outputs
# Notebooks whose small mode must end below a test log-likelihood in bits per dimension, read from
# the "= X bits/dim" they print. A model giving all 256 values of every pixel the same probability
# scores 8. Notebook 05's small mode prints a test log p(x) of 6.78 bits/dim (ELBO 6.83) on this
# machine (2026-12-06); its settings on 1,000 or 3,000 of the same pictures give test ELBOs of 6.5
# to 7.2 after 4 to 8 epochs, varying by up to 0.6 from one epoch to the next (docs/own-data.md),
# so the bound leaves room above 7. Its earlier 600 images x 3 epochs of batches of 64 ended at 8.24.
BITS_PER_DIM_BELOW = {"05_your_own_data.ipynb": 7.5}
# Notebook 05 draws a centred disc or square, 15 to 27 pixels across (half-side 7 to 13), on 32x32
# pictures, and shows fit's samples.png (8 x 8) and reconstructions.png (originals above their
# reconstructions, 16 a row, 2 rows of each). Each picture is classified by the shape outline that
# fits it best, with one colour inside and one outside. Its small mode (2026-12-06): all 32
# reconstructions of the kind of their original, a median disc-or-square margin of 0.07 over the
# samples (0.15 over the reconstructions), 23 squares among the 64 samples; with its earlier shapes
# of 9 to 15 pixels at random places, blurred light blobs: 23 of 32 and a margin of 0.025.
SHAPES_NOTEBOOK = "05_your_own_data.ipynb"
SHAPE_SIDE, GRID_PADDING, SHAPE_HALF_SIDES = 32, 2, range(7, 14)
RECONSTRUCTIONS_OF_THEIR_KIND = 0.9  # share of the 32 reconstructions
SAMPLE_MARGIN_ABOVE = 0.05  # median over the 64 samples: (SSE of the other kind - SSE of the best) / variance
SAMPLES_OF_EACH_KIND = 8  # of the 64: a sample grid of one kind only is not two shapes learned


def _code_cells(notebook):
    return [c for c in notebook["cells"] if c["cell_type"] == "code"]


def _tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    for cell in _code_cells(json.loads(path.read_text())):
        assert cell["outputs"] == [] and cell["execution_count"] is None, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_uses_one_thread_and_tags_its_plots(path):
    # one torch thread: the suite must pass with a CPU-bound process per core running alongside
    cells = _code_cells(json.loads(path.read_text()))
    source = "\n".join("".join(c["source"]) for c in cells)
    assert re.findall(r"set_num_threads\((.*?)\)", source) == ["1"], path.name
    assert "matplotlib.use(" not in source and "MPLBACKEND" not in source, path.name
    assert any(PLOT_TAG in _tags(c) for c in cells), f"{path.name}: no cell is tagged {PLOT_TAG!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, mnist_dataset, data_root, tmp_path, monkeypatch):
    # the kernel inherits the environment: small data, and the session's already-fetched MNIST
    monkeypatch.setenv("PYRO_VAE_SMALL", "1")
    monkeypatch.setenv("PYRO_VAE_DATA", str(data_root))
    # no forced backend: the kernel's own inline backend, as a user's Jupyter has it
    monkeypatch.delenv("MPLBACKEND", raising=False)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    blank = [
        c.source.splitlines()[0]
        for c in notebook.cells
        if c.cell_type == "code"
        and PLOT_TAG in _tags(c)
        and not any("image/png" in o.get("data", {}) for o in c.outputs)
    ]
    assert not blank, f"{path.name}: cells tagged {PLOT_TAG!r} showed no image: {blank}"
    if path.name in BITS_PER_DIM_BELOW:
        printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
        bits = [float(b) for b in re.findall(r"= (\d+\.\d+) bits/dim", printed)]
        assert bits and bits[0] < BITS_PER_DIM_BELOW[path.name], (path.name, bits)
    if path.name == SHAPES_NOTEBOOK:
        _assert_shapes_recognisable(_shown_pictures(notebook))


def _shown_pictures(notebook) -> dict[str, Image.Image]:
    """The PNG images that code cells displayed, each under the last file name printed before it."""
    pictures, name = {}, None
    for cell in notebook.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.output_type == "stream":
                name = output.text.split()[-1] if output.text.split() else name
            elif "image/png" in output.get("data", {}):
                pictures[name] = Image.open(io.BytesIO(base64.b64decode(output["data"]["image/png"])))
    return pictures


def _grid_tiles(picture: Image.Image, rows: int, cols: int) -> np.ndarray:
    """The rows x cols images of a torchvision grid (2 pixels of padding; row labels, if any, in a
    column on the left) as floats in [0, 1], (rows * cols, 32, 32, 3)."""
    pixels = np.asarray(picture.convert("RGB"), dtype=np.float64) / 255
    left = pixels.shape[1] - (cols * (SHAPE_SIDE + GRID_PADDING) + GRID_PADDING)
    step = SHAPE_SIDE + GRID_PADDING
    return np.stack(
        [
            pixels[GRID_PADDING + i * step :][:SHAPE_SIDE, left + GRID_PADDING + j * step :][:, :SHAPE_SIDE]
            for i in range(rows)
            for j in range(cols)
        ]
    )


def _disc_or_square(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each image (N, 32, 32, 3): 1 where a centred square outline fits it best, 0 a disc, with
    one least-squares colour inside the outline and one outside; the margin (the other kind's best
    squared error less this kind's, over the image's variance); and the share of the variance the
    best outline explains."""
    masks = []
    for draw in ("ellipse", "rectangle"):
        for r in SHAPE_HALF_SIDES:
            mask = Image.new("L", (SHAPE_SIDE, SHAPE_SIDE), 0)
            c = SHAPE_SIDE // 2
            getattr(ImageDraw.Draw(mask), draw)([c - r, c - r, c + r, c + r], fill=1)
            masks.append(np.asarray(mask, dtype=np.float64).ravel())
    masks = np.stack(masks)  # (M, P): the discs, then the squares
    x = images.reshape(len(images), -1, 3)  # (N, P, 3)
    inside = np.einsum("mp,npc->nmc", masks, x)  # (N, M, 3) colour sums
    outside = x.sum(1)[:, None] - inside
    count = masks.sum(1)
    total = (x**2).sum((1, 2))
    error = total[:, None] - (inside**2).sum(-1) / count - (outside**2).sum(-1) / (x.shape[1] - count)
    half = len(SHAPE_HALF_SIDES)
    disc, square = error[:, :half].min(1), error[:, half:].min(1)
    variance = total - (x.sum(1) ** 2).sum(-1) / x.shape[1]
    return (square < disc).astype(int), np.abs(square - disc) / variance, 1 - np.minimum(disc, square) / variance


def _assert_shapes_recognisable(pictures: dict[str, Image.Image]) -> None:
    """Notebook 05's reconstructions are of their original's kind and its samples are clearly
    discs or squares, of both kinds (module constants)."""
    grid = _grid_tiles(pictures["reconstructions.png"], 4, 16)
    originals, reconstructions = grid[[*range(16), *range(32, 48)]], grid[[*range(16, 32), *range(48, 64)]]
    kind, _, explained = _disc_or_square(originals)
    assert explained.min() > 0.99, "the outlines do not describe the notebook's pictures: update SHAPE_HALF_SIDES"
    agree = float((_disc_or_square(reconstructions)[0] == kind).mean())
    assert agree >= RECONSTRUCTIONS_OF_THEIR_KIND, f"{agree:.0%} of the reconstructions are of their original's kind"
    sampled, margin, _ = _disc_or_square(_grid_tiles(pictures["samples.png"], 8, 8))
    assert np.median(margin) > SAMPLE_MARGIN_ABOVE, f"samples blur disc and square: margin {np.median(margin):.3f}"
    squares = int(sampled.sum())
    assert SAMPLES_OF_EACH_KIND <= squares <= len(sampled) - SAMPLES_OF_EACH_KIND, f"{squares} squares of 64 samples"
