"""Benchmark: pyro-vae's importance-weighted log p(x) against a hand-written estimator, alternating in one process.

Both score the same test images with the same default-size VAE (MLP 784-512-512, latent 32, from
the same weights), K importance samples per image, one torch thread. pyro-vae runs
``importance_weighted_log_px`` batch by batch as ``pyro_vae.evaluate`` does (Pyro traces, the
guide once per batch, particles seeded one by one, float64 accumulation); the reference
(benchmarks/reference.py) runs the encoder once per batch and draws the K particles from
torch.distributions.Normal in the same chunks of ``k_chunk`` particles. The passes alternate
(pyro-vae, reference, ...); the JSON reports the median seconds, ``ratio_over_hand_written``,
and the achieved GFLOP/s of both (the networks' multiply-adds counted by
torch.utils.flop_counter) next to a plain matrix product's of the decoder's widest layer.
Each pass's CPU time of this process is recorded too, split into user and system time, with
its minor page faults: on a busy machine the process time is robust to other jobs, and the
system time shows what the memory allocator costs (``ratio_process_time``, ``ratio_user_time``).
One untimed pass of each runs first (``--warmup``): the process's first pass grows its heap and
faults in more pages than later ones (pyro-vae's about 800,000 against 470,000 here; the
hand-written estimator's, when it ran first, also more than its later passes), and without the
warm-up that cost would land on pyro-vae's first timed pass alone. The warm-up passes' CPU time
and page faults are recorded apart (``warmup_*``).

    python benchmarks/eval_speed.py --k 1000 --images 500 --out benchmarks/results/eval_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import pyro
import torch
from reference import SIZES, TorchVAE, alternate, copy_weights, machine, medians
from torch.utils.flop_counter import FlopCounterMode


def network_flops(reference: TorchVAE, x: torch.Tensor, k: int) -> float:
    """FLOPs of the networks for K particles of the images ``x``: the encoder once per image, the
    decoder once per particle (counted on one and two particles, then extrapolated)."""
    counts = []
    for particles in (1, 2):
        counter = FlopCounterMode(display=False)
        with counter:
            reference.iwae_log_px(x, particles, particles)
        counts.append(counter.get_total_flops())
    per_particle = counts[1] - counts[0]
    return counts[0] - per_particle + k * per_particle


def matmul_gflops(rows: int, inner: int, cols: int, seconds: float = 1.0) -> float:
    """GFLOP/s of torch.mm on (rows, inner) @ (inner, cols), repeated for about ``seconds``."""
    a, b = torch.randn(rows, inner), torch.randn(inner, cols)
    torch.mm(a, b)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        done += 1
    return 2 * rows * inner * cols * done / (time.perf_counter() - start) / 1e9


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=1000, help="importance samples per image")
    parser.add_argument("--images", type=int, default=500, help="test images scored per pass")
    parser.add_argument("--batch-size", type=int, default=None, help="images per batch (default: the CLI's)")
    parser.add_argument("--k-chunk", type=int, default=None, help="particles per model call (default: automatic)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes of each, alternating")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes of each first")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="benchmarks/results/eval_speed.json")
    args = parser.parse_args(argv)
    if min(args.k, args.images, args.repeats) < 1:
        parser.error("--k, --images and --repeats must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be at least 0")

    torch.set_num_threads(1)
    pyro.settings.set(module_local_params=True)
    from pyro_vae.atomic import write_json
    from pyro_vae.config import FitConfig
    from pyro_vae.data import evaluation_images, load_dataset
    from pyro_vae.engine.evaluate import DEFAULT_BATCH_SIZE
    from pyro_vae.evaluation import auto_k_chunk, importance_weighted_log_px
    from pyro_vae.nets import NetSpec
    from pyro_vae.variants import build_vae

    result = {"benchmark": "eval_speed", **machine()}
    dataset = load_dataset("mnist", args.data_dir)
    images = evaluation_images(dataset.test, "dynamic", 0)[0][: args.images]
    config = FitConfig(**SIZES["default"])
    pyro.set_rng_seed(0)
    vae = build_vae(config, dataset.image_shape).eval()
    reference = TorchVAE(NetSpec(dataset.image_shape, config.latent_dim, config.hidden)).eval()
    copy_weights(vae, reference)
    batch_size = min(args.batch_size or DEFAULT_BATCH_SIZE, args.images)
    batches = [images[i : i + batch_size] for i in range(0, images.shape[0], batch_size)]
    k_chunk = args.k_chunk or auto_k_chunk(vae.model, vae.guide, batches[0], k=args.k)

    def pyro_vae_pass():
        for index, x in enumerate(batches):
            importance_weighted_log_px(vae.model, vae.guide, x, k=args.k, k_chunk=k_chunk, batch_index=index)

    def hand_pass():
        for x in batches:
            reference.iwae_log_px(x, args.k, k_chunk)

    usage = {"pyro_vae": [], "hand_written": []}  # per pass, warm-up first: (user s, system s, minor page faults)

    def measured(name, run):
        def timed_run():
            before = resource.getrusage(resource.RUSAGE_SELF)
            run()
            after = resource.getrusage(resource.RUSAGE_SELF)
            usage[name].append(
                (after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime, after.ru_minflt - before.ru_minflt)
            )

        return timed_run

    times = alternate(
        {"pyro_vae": measured("pyro_vae", pyro_vae_pass), "hand_written": measured("hand_written", hand_pass)},
        args.repeats,
        warmup=args.warmup,
    )
    warmup = {name: rows[: args.warmup] for name, rows in usage.items()}
    usage = {name: rows[args.warmup :] for name, rows in usage.items()}
    median = medians(times)
    user = {name: [u for u, _, _ in rows] for name, rows in usage.items()}
    system = {name: [s for _, s, _ in rows] for name, rows in usage.items()}
    process = {name: [u + s for u, s, _ in rows] for name, rows in usage.items()}
    median_process, median_user = medians(process), medians(user)
    flops = sum(network_flops(reference, x, args.k) for x in batches)
    widest = max(config.hidden)
    result.update(
        {
            "config": {
                "k": args.k,
                "images": images.shape[0],
                "batch_size": batch_size,
                "k_chunk": k_chunk,
                "model": "default VAE (MLP 784-512-512, latent 32, Bernoulli)",
                "repeats": args.repeats,
                "warmup": args.warmup,
            },
            "reference": "hand-written IWAE estimator: the encoder once per batch, K particles in the same chunks",
            "seconds": times,
            "median_seconds": median,
            "ratio_over_hand_written": median["pyro_vae"] / median["hand_written"],
            "process_seconds": process,
            "user_seconds": user,
            "system_seconds": system,
            "minor_page_faults": {name: [f for _, _, f in rows] for name, rows in usage.items()},
            "warmup_process_seconds": {name: [u + s for u, s, _ in rows] for name, rows in warmup.items()},
            "warmup_minor_page_faults": {name: [f for _, _, f in rows] for name, rows in warmup.items()},
            "median_process_seconds": median_process,
            "ratio_process_time": median_process["pyro_vae"] / median_process["hand_written"],
            "ratio_user_time": median_user["pyro_vae"] / median_user["hand_written"],
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
            "network_gflop": flops / 1e9,
            "achieved_gflop_per_s": {name: flops / 1e9 / t for name, t in median.items()},
            "matmul_gflop_per_s": matmul_gflops(k_chunk * batch_size, widest, images[0].numel()),
            "matmul_shape": [k_chunk * batch_size, widest, images[0].numel()],
            "load_average_at_end": list(os.getloadavg()),
        }
    )
    write_json(args.out, result)
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "median_seconds",
                    "ratio_over_hand_written",
                    "ratio_process_time",
                    "ratio_user_time",
                    "achieved_gflop_per_s",
                    "matmul_gflop_per_s",
                )
            }
        )
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
