"""reconstructions.png says which row is which; the grid helper is public and in the README, as is
`python -m pyro_vae.generate` (issue 26 point 3)."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pyro_vae import plots

README = Path(__file__).resolve().parent.parent / "README.md"


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image.convert("L"))


class Halving:
    """A stand-in for a VAE: its reconstruction of x is x / 2."""

    def reconstruct(self, x, y=None):
        return x / 2


def test_reconstructions_label_their_rows(tmp_path):
    x = torch.ones(4, 1, 28, 28)
    plain = pixels(plots.save_grid(torch.cat([x, x / 2]), tmp_path / "plain.png", nrow=4))
    path = plots.reconstruction_grid(Halving(), x, tmp_path / "reconstructions.png")
    labelled = pixels(path)
    margin = labelled.shape[1] - plain.shape[1]
    assert labelled.shape[0] == plain.shape[0] and margin > 40  # a column of row labels on the left
    band = labelled.shape[0] // 2
    for row in (labelled[:band, :margin], labelled[band:, :margin]):  # text in each row's label
        assert (row < 128).any()
    assert plots.ROW_LABELS == ("original", "reconstruction")


def test_save_grid_takes_row_labels_and_rejects_a_wrong_count(tmp_path):
    images = torch.rand(6, 3, 8, 8)
    path = plots.save_grid(images, tmp_path / "g.png", nrow=3, row_labels=["a", "b"])
    assert pixels(path).shape[0] == 2 * 10 + 2
    try:
        plots.save_grid(images, tmp_path / "h.png", nrow=3, row_labels=["a"])
    except ValueError as error:
        assert "2 rows" in str(error) and "1 label" in str(error)
    else:
        raise AssertionError("a wrong number of labels was accepted")


def test_the_readme_shows_the_grid_helper_and_generate():
    text = README.read_text()
    python_section = text.split("## From Python")[1].split("## ")[0]
    assert "save_grid" in python_section and "from pyro_vae.plots import save_grid" in python_section
    assert "python -m pyro_vae.generate" in text


def test_reconstructions_of_a_count_that_is_not_a_multiple_of_a_row_keep_their_rows(tmp_path):
    """20 images: a row of 16 and a short row of 4, each above its reconstructions."""
    from pyro_vae.config import FitConfig
    from pyro_vae.plots import reconstruction_grid
    from pyro_vae.variants import build_vae

    vae = build_vae(FitConfig(latent_dim=2, hidden=(8,)), (1, 6, 6)).eval()
    path = reconstruction_grid(vae, torch.rand(20, 1, 6, 6), tmp_path / "r.png")
    full = reconstruction_grid(vae, torch.rand(32, 1, 6, 6), tmp_path / "full.png")
    with Image.open(path) as short, Image.open(full) as whole:
        assert short.size == whole.size  # 4 rows of 16 either way
