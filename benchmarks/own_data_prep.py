"""Benchmark: preparing and training on a CelebA-sized folder of JPEGs, with peak memory.

Generates N colour JPEGs (80x80: noise, a gradient and random shapes; cropped to 64x64 by
``--image-size 64``), then in fresh subprocesses, each measured by its peak resident memory
(``ru_maxrss``, which counts the memory-mapped cache pages a process touches):
  1. ``prepare``: the first load -- check (hash + headers) and decode into the cached uint8 array;
  2. ``reuse``: a second load, which finds the cache;
  3. ``train``: ``Trainer`` on the whole training split (the conv net, discretized logistic), one
     pass drawing every training batch (uint8 -> float per batch, touching the whole cache), then
     ``--steps`` SVI steps.
The folder and the cache are deleted afterwards unless ``--keep``.

    nice python benchmarks/own_data_prep.py --images 200000 --out benchmarks/results/own_data_prep.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

SIDE = 80  # generated JPEG side; --image-size 64 crops the centre
CROP = 64
CHANNELS = 3


def generate(folder: Path, n: int, seed: int = 0) -> float:
    """Write n JPEGs into ``folder`` (flat, no labels); returns the seconds taken."""
    from PIL import Image, ImageDraw

    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, SIDE, dtype=np.float32)
    for i in range(n):
        base = rng.integers(0, 256, 3).astype(np.float32)
        tilt = rng.integers(-80, 80, 3).astype(np.float32)
        pixels = base + tilt * ramp[:, None, None] + rng.normal(0, 12, (SIDE, SIDE, CHANNELS))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.integers(1, 4)):
            x0, y0 = rng.integers(0, SIDE - 10, 2)
            x1, y1 = x0 + rng.integers(8, 40), y0 + rng.integers(8, 40)
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([int(x0), int(y0), int(x1), int(y1)], fill=colour)
        image.save(folder / f"{i:06d}.jpg", quality=90)
    return time.perf_counter() - start


def memory() -> dict[str, int]:
    """This process's peak and current resident memory, split into anonymous (the process's own)
    and file-backed (shared libraries and memory-mapped files, which the kernel can evict), bytes."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(line.split()[1]) * 1024
    return fields


def child(stage: str, folder: str, cache: str, steps: int) -> None:
    """One measured stage, in its own process; prints one JSON line."""
    import torch

    torch.set_num_threads(1)
    from pyro_vae.config import FitConfig
    from pyro_vae.data import load_data

    config = FitConfig(
        data=folder,
        image_size=CROP,
        data_dir=cache,
        net="conv",
        likelihood="discretized-logistic",
        eval_size=500,
        batch_size=64,
        latent_dim=32,
        hidden=(256,),
        accelerator="cpu",
        out=str(Path(cache) / "run"),
    )
    start = time.perf_counter()
    dataset = load_data(config, log=lambda line: print(line, file=sys.stderr, flush=True))
    result = {
        "stage": stage,
        "load_seconds": time.perf_counter() - start,
        "shape": list(dataset.train.data.shape[1:]),
        "images": len(dataset.train) + len(dataset.valid) + len(dataset.test),
        "uint8_bytes": int(sum(s.data.numel() for s in (dataset.train, dataset.valid, dataset.test))),
        "memory_after_load": memory(),
    }
    if stage == "train":
        import pyro

        from pyro_vae.engine import Trainer

        pyro.settings.set(module_local_params=True)  # as fit sets it: parameters live in the modules
        start = time.perf_counter()
        trainer = Trainer(config, dataset, Path(config.out), torch.device("cpu"))
        result["trainer_setup_seconds"] = time.perf_counter() - start
        result["memory_after_trainer_setup"] = memory()
        start = time.perf_counter()
        drawn = 0
        for x, _ in trainer.variant.batches:  # every training batch: uint8 -> float32, one batch at a time
            drawn += x.shape[0]
        result["draw_all_batches_seconds"] = time.perf_counter() - start
        result["images_drawn"] = drawn
        result["memory_after_drawing_every_batch"] = memory()
        trainer.vae.train()
        losses = []
        start = time.perf_counter()
        for i, args in enumerate(trainer.variant.training_batches()):  # the engine's optimizer steps
            if i == steps:
                break
            losses.append(float(trainer.train_step(args)) / trainer.variant.num_train)
        result["svi_steps"] = len(losses)
        result["svi_seconds"] = time.perf_counter() - start
        result["loss_first_last_nats_per_image"] = [losses[0], losses[-1]]
        result["memory_after_svi_steps"] = memory()
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result), flush=True)


def measure(stage: str, folder: Path, cache: Path, steps: int) -> dict:
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            stage,
            "--folder",
            str(folder),
            "--cache",
            str(cache),
            "--steps",
            str(steps),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{stage} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = time.perf_counter() - start
    result["log"] = [line for line in done.stderr.splitlines() if "it/s" not in line and "img/s" not in line][-3:]
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workdir", default=None, help="where the folder and cache go (default: a temp dir)")
    parser.add_argument("--out", default=None, help="JSON file for the results")
    parser.add_argument("--keep", action="store_true", help="keep the generated folder and cache")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.folder, args.cache, args.steps)
        return
    work = Path(args.workdir or tempfile.mkdtemp(prefix="pyro-vae-own-data-"))
    folder, cache = work / "jpegs", work / "cache"
    try:
        seconds = generate(folder, args.images)
        folder_bytes = sum(p.stat().st_size for p in folder.iterdir())
        print(json.dumps({"generated": args.images, "seconds": seconds, "folder_bytes": folder_bytes}), flush=True)
        results = {
            "command": " ".join(["python", *sys.argv]),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} CPU, {platform.system()}, no GPU used",
            "images": args.images,
            "jpeg_side": SIDE,
            "image_size": CROP,
            "generate_seconds": seconds,
            "folder_bytes": folder_bytes,
            "prepare": measure("prepare", folder, cache, args.steps),
            "reuse": measure("reuse", folder, cache, args.steps),
            "train": measure("train", folder, cache, args.steps),
        }
        size = results["prepare"]["uint8_bytes"]
        for stage in ("prepare", "reuse", "train"):
            results[stage]["peak_rss_over_uint8_size"] = results[stage]["peak_rss_bytes"] / size
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
