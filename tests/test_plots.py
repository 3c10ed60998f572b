"""The library's pictures are drawn on their own figure canvases: writing them never imports pyplot
nor switches matplotlib's backend, so a notebook's inline figures survive a training run."""

import subprocess
import sys
import textwrap

# Runs in a fresh interpreter: pyplot must not be imported there before or by the plotting calls.
SCRIPT = textwrap.dedent("""
    import sys, torch, numpy as np
    import matplotlib
    matplotlib.use("svg")  # a backend the library must leave alone
    from pyro_vae import plots
    from pyro_vae.evaluation.diagnostics import LogPxCurve
    from pyro_vae.plots import plot_khat_histogram, plot_log_px_against_k
    from pathlib import Path
    out = Path(sys.argv[1])
    records = [{"epoch": e, **{f"{s}_{t}": -100.0 + e for s in ("train", "valid", "test")
                               for t in ("elbo", "recon", "kl", "accuracy")}} for e in (1, 2, 3)]
    written = [
        plots.training_curves(records, out / "curves.png"),
        plots.confusion_matrix(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 2, 2, 2]), out / "cm.png"),
        plots.scatter_by_label(torch.randn(50, 2), torch.arange(50) % 10, "t", ("a", "b"), out / "map.png"),
        plot_khat_histogram(np.array([0.1, 0.6, 0.9, np.nan]), out / "khat.png"),
        plot_log_px_against_k(LogPxCurve(ks=(1, 10), log_px=np.array([[-3.0, -2.5], [-2.0, -1.9]])),
                              out / "k.png"),
    ]
    for p in written:
        assert p.read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n", p
    print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
""")


def test_pictures_use_their_own_canvas(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["svg", "False"]  # backend unchanged, pyplot never imported
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png", "curves.png", "k.png", "khat.png", "map.png"]
