"""Resuming and evaluating on a GPU, proven without one (issue 14, point 4).

No GPU is lent here, so each GPU path is driven the way it can be on a CPU: the ``meta`` device
stands in for a GPU's memory (shapes, no data: a CPU tensor mixed in raises, and a value read back
from it is a host synchronisation), checkpoints are written with their tensors tagged as a GPU's,
and for evaluation, fake CUDA tensors (``FakeTensorMode``) on ``cuda:1`` meet a stand-in for
``torch.cuda``'s per-device generators and ``mem_get_info``. Each test fails on one defect found
in older code:

(a) RNG states restored from tensors moved to the run's device (``torch.set_rng_state`` takes
    only a CPU ByteTensor);
(b) Adam's ``step`` counts left on the device after a resume: a host read per parameter and step;
(c) the batch sampler's state sized by the device's generator, so a run could not change device;
(d) evaluation seeding the current CUDA device instead of the images' own;
(e) the evaluation chunk size ignoring the GPU's free memory, or sized with private torch APIs.
"""

import ast
import contextlib
import random
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyro
import pytest
import torch
from test_host_syncs import HostReads
from test_train import small_config, train
from torch._subclasses.fake_tensor import FakeTensorMode

import pyro_vae
from pyro_vae.config import FitConfig
from pyro_vae.data import DeviceBatches
from pyro_vae.engine import Trainer, load_checkpoint
from pyro_vae.engine.checkpoint import restore_optimizer, rng_state, set_rng_state
from pyro_vae.engine.optim import build_optimizer, build_scheduler
from pyro_vae.evaluation import iwae
from pyro_vae.variants import build_vae

# --------------------------------------------------------------------------------------------
# (a), (b): a CPU run's checkpoint resumed by a trainer whose device is another one


@pytest.fixture(scope="module")
def cpu_run(mnist_dataset, tmp_path_factory) -> Path:
    """A finished one-epoch CPU run (dynamic binarization): last.pt holds optimizer state."""
    out = tmp_path_factory.mktemp("cpu-run")
    train(mnist_dataset, out, epochs=1)
    return out


def meta_trainer(dataset, run: Path, tmp_path: Path) -> Trainer:
    """The trainer of ``run``'s config, moved to the ``meta`` device as the CLI would build it on
    a GPU: networks there, one Adam over them as build_optimizer makes it for that device (not
    fused: torch fuses only for real devices), the training batches drawn for it."""
    out = tmp_path / "run"
    shutil.copytree(run, out)
    config = small_config(dataset, out, epochs=2)
    trainer = Trainer(config, dataset, out, "cpu", log=lambda _: None)
    trainer.vae.to("meta")
    trainer.device = torch.device("meta")
    trainer.loss = trainer.variant.loss  # (not Fabric's CPU wrapper)
    trainer.optimizer = trainer.fabric_optimizer = build_optimizer(trainer.loss.parameters(), config.lr)
    trainer.scheduler = build_scheduler(trainer.optimizer, config)
    trainer.fabric = SimpleNamespace(backward=lambda t: t.backward())
    cpu = trainer.variant.batches
    trainer.variant.batches = DeviceBatches(
        cpu.images, cpu.labels, cpu.batch_size, binarization=trainer.config.binarize, seed=config.seed, device="meta"
    )
    return trainer


def restore_quietly(trainer: Trainer, checkpoint: Path) -> None:
    with warnings.catch_warnings():  # copying weights into data-free meta parameters is a no-op
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter", category=UserWarning)
        trainer.restore(checkpoint)


def test_rng_states_are_restored_from_cpu_tensors_on_another_device(mnist_dataset, cpu_run, tmp_path):
    """(a) A trainer on another device resumes a CPU run: the checkpoint is read onto the CPU, not
    onto the trainer's device (where torch.set_rng_state would refuse the state), and every RNG
    state is restored exactly."""
    trainer = meta_trainer(mnist_dataset, cpu_run, tmp_path)
    payload = torch.load(cpu_run / "last.pt", weights_only=True)
    saved = payload["rng"][0]
    pyro.set_rng_seed(12345)  # other states than the saved ones
    restore_quietly(trainer, cpu_run / "last.pt")
    assert torch.equal(torch.get_rng_state(), saved["torch"])
    assert random.getstate() == saved["python"]
    assert np.array_equal(np.random.get_state()[1], saved["numpy"][1].numpy())
    assert trainer.epoch == 1 and trainer.step == payload["step"] > 0


def test_a_checkpoint_written_on_a_gpu_resumes_its_rng_states_here(cpu_run, tmp_path, monkeypatch):
    """(a) Every tensor of a checkpoint tagged as cuda:0's, as a GPU run writes it (with 16-byte
    CUDA generator states): it is read onto the CPU of a machine without a GPU, and its RNG states
    restore from CPU ByteTensors."""
    payload = torch.load(cpu_run / "last.pt", weights_only=True)
    payload["rng"][0]["cuda"] = [torch.zeros(16, dtype=torch.uint8)]  # a CUDA generator's state
    gpu_written = tmp_path / "gpu.pt"
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(payload, gpu_written)
    with pytest.raises(RuntimeError, match="CUDA"):  # read as written, it needs a GPU
        torch.load(gpu_written, weights_only=True)
    loaded = load_checkpoint(gpu_written)
    rng = loaded["rng"][0]
    assert rng["torch"].device.type == "cpu" and rng["torch"].dtype == torch.uint8
    torch.manual_seed(7)
    set_rng_state(rng)
    assert torch.equal(torch.get_rng_state(), payload["rng"][0]["torch"])


def test_adam_step_counts_stay_where_torch_reads_them_after_a_resume(mnist_dataset, cpu_run, tmp_path, monkeypatch):
    """(b) After a resume on another device, a plain (foreach) Adam's step counts are CPU scalars
    and its moments on the parameters' device, so a training step reads nothing back: 0 host
    synchronisations, as before the interruption (a step count on the device costs one read per
    parameter and step)."""
    from pyro_vae.engine import loop

    monkeypatch.setattr(loop, "VALIDATE_EVERY_STEP", False)
    trainer = meta_trainer(mnist_dataset, cpu_run, tmp_path)
    assert not trainer.optimizer.param_groups[0]["fused"]  # the checkpoint's optimizer was fused
    restore_quietly(trainer, cpu_run / "last.pt")
    states = list(trainer.optimizer.state.values())
    assert len(states) == len(list(trainer.loss.parameters())) > 0
    assert all(s["step"].device.type == "cpu" and s["step"].dim() == 0 for s in states)
    assert all(s["exp_avg"].device.type == "meta" and s["exp_avg_sq"].device.type == "meta" for s in states)
    assert float(states[0]["step"]) == trainer.step  # the count itself survives
    assert not trainer.optimizer.param_groups[0]["fused"]  # this device's choice, not the checkpoint's
    batches = iter(trainer.variant.training_batches())
    with warnings.catch_warnings(), HostReads():  # the first step (validated; reads answered)
        warnings.simplefilter("ignore")
        trainer.train_step(next(batches))
    counter = HostReads()
    with warnings.catch_warnings(), counter:
        warnings.simplefilter("ignore")
        for _ in range(2):
            trainer.train_step(next(batches))
    assert counter.reads == []


@pytest.mark.parametrize("settings, on_device", [({"foreach": True}, False), ({"capturable": True}, True)])
def test_restore_optimizer_puts_step_where_adam_expects_it(settings, on_device):
    """(b) The placement rule itself, for a state whose step counts come from another device (a
    checkpoint's fused Adam: float32 counts) onto meta parameters: a CPU scalar for a plain Adam,
    a float32 scalar on the parameters' device for a capturable (or fused) one."""
    source = torch.nn.Parameter(torch.zeros(3))
    fused = torch.optim.Adam([source], lr=1e-3, fused=True)
    source.grad = torch.ones(3)
    fused.step()
    param = torch.nn.Parameter(torch.zeros(3, device="meta"))
    optimizer = torch.optim.Adam([param], lr=1e-3, **settings)
    restore_optimizer(optimizer, fused.state_dict())
    step = optimizer.state[param]["step"]
    assert step.device.type == ("meta" if on_device else "cpu")
    assert optimizer.param_groups[0]["fused"] is None  # its own setting kept: not the checkpoint's True
    assert optimizer.param_groups[0]["capturable"] == settings.get("capturable", False)
    if on_device:
        assert step.dtype == torch.float32
    else:
        assert float(step) == 1.0


# --------------------------------------------------------------------------------------------
# (c) the batch sampler's state: one size on every device


def test_the_batch_sampler_resumes_across_devices(mnist_dataset, cpu_run, tmp_path):
    """(c) A CPU run's sampler state resumes on another device (here: ``meta``), and that
    device's state resumes on the CPU: the state is a CPU generator's, the same size wherever
    the batches are drawn, and the epochs after it draw the same permutations as an
    uninterrupted CPU run (see test_data_batches for the batches themselves)."""
    trainer = meta_trainer(mnist_dataset, cpu_run, tmp_path)
    restore_quietly(trainer, cpu_run / "last.pt")  # the sampler's state of a CPU run
    cpu_state = torch.load(cpu_run / "last.pt", weights_only=True)["sampler"]["generator"]
    meta_state = trainer.variant.sampler_state()["generator"]
    assert meta_state.device.type == "cpu" and torch.equal(meta_state, cpu_state)
    assert meta_state.numel() == torch.Generator().get_state().numel()


# --------------------------------------------------------------------------------------------
# (d), (e): evaluation on fake CUDA tensors of cuda:1


class FakeCuda:
    """``torch.cuda``'s per-device generators, current device and free memory, for two GPUs
    (each generator a CPU one): which device each seed reached, and what was asked."""

    def __init__(self, free_bytes: int = 2**30):
        self.generators = {0: torch.Generator(), 1: torch.Generator()}
        self.current = 0
        self.seeded: list[tuple[int, int]] = []  # (device index, seed)
        self.free_bytes = free_bytes
        self.asked: list[torch.device] = []

    def _index(self, device) -> int:
        device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
        return self.current if device.index is None else device.index

    def get_rng_state(self, device="cuda"):
        return self.generators[self._index(device)].get_state()

    def set_rng_state(self, state, device="cuda"):
        self.generators[self._index(device)].set_state(state)

    def manual_seed(self, seed):  # as torch.cuda.manual_seed: the current device's generator
        self.seeded.append((self.current, seed))
        self.generators[self.current].manual_seed(seed)

    @contextlib.contextmanager
    def device(self, device):
        before, self.current = self.current, self._index(device)
        try:
            yield
        finally:
            self.current = before

    def mem_get_info(self, device=None):
        self.asked.append(torch.device(device) if device is not None else None)
        return self.free_bytes, 4 * self.free_bytes


@pytest.fixture
def fake_cuda(monkeypatch) -> FakeCuda:
    fake = FakeCuda()
    for name in ("get_rng_state", "set_rng_state", "manual_seed", "device", "mem_get_info"):
        monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    return fake


@contextlib.contextmanager
def on_fake_cuda1():
    """Fake CUDA tensors on cuda:1, Pyro's validation off (a fake value cannot be checked)."""
    with (
        FakeTensorMode(allow_non_fake_inputs=False),
        torch.device("cuda:1"),
        torch.no_grad(),
        pyro.validation_enabled(False),
    ):
        yield


def fake_vae_and_images():
    vae = build_vae(FitConfig(hidden=(32, 32), latent_dim=4), (1, 28, 28), 10).eval()
    x = torch.empty(16, 1, 28, 28).bernoulli_(0.5)  # (16, 1, 28, 28) on cuda:1
    return vae, x


def test_evaluation_seeds_the_images_own_cuda_device(fake_cuda):
    """(d) With cuda:0 current and the images on cuda:1, every particle's seed goes to cuda:1's
    generator (torch.cuda.manual_seed alone would seed cuda:0's), and evaluation leaves cuda:1's
    generator as it found it."""
    fake_cuda.generators[1].manual_seed(99)
    before = {i: g.get_state() for i, g in fake_cuda.generators.items()}
    seeds = [iwae.particle_seed(3, 0, j) for j in range(4)]
    with on_fake_cuda1():
        vae, x = fake_vae_and_images()
        with iwae._evaluation_context(vae.model, vae.guide, x):
            log_w, _, _ = iwae._chunk_log_weights(vae.model, vae.guide, x, None, seeds, "z")
        assert log_w.shape == (4, 16) and log_w.device == torch.device("cuda:1")
    assert fake_cuda.seeded and {device for device, _ in fake_cuda.seeded} == {1}
    assert sorted(set(seed for _, seed in fake_cuda.seeded)) == sorted(seeds)
    for index, state in before.items():
        assert torch.equal(fake_cuda.generators[index].get_state(), state), index


def test_the_evaluation_chunk_fits_the_gpus_free_memory(fake_cuda):
    """(e) On a GPU the automatic chunk is capped at half the free memory that the public
    torch.cuda.mem_get_info reports for the images' own device: 8 times less free memory, about
    8 times fewer particles per chunk."""
    chunks = {}
    for free in (2**32, 2**29):
        fake_cuda.free_bytes = free
        with on_fake_cuda1():
            vae, x = fake_vae_and_images()
            chunks[free] = iwae.auto_k_chunk(vae.model, vae.guide, x, k=10**9, memory_budget_mb=10**9)
    assert fake_cuda.asked == [torch.device("cuda:1")] * 2
    big, small = chunks[2**32], chunks[2**29]
    assert 1 < small < big and big // 8 - 1 <= small <= big // 8 + 1, chunks
    fake_cuda.free_bytes = 2**40  # free memory plentiful: the budget in MB decides
    with on_fake_cuda1():
        vae, x = fake_vae_and_images()
        budgeted = iwae.auto_k_chunk(vae.model, vae.guide, x, k=10**9, memory_budget_mb=2**29 / 2 / 2**20)
    assert budgeted == small


def test_cuda_rng_states_are_restored_for_the_gpus_present(fake_cuda, monkeypatch):
    """(a) A checkpoint of a machine with two GPUs resumed on a machine with one: the first
    CUDA state goes to cuda:0, from a CPU tensor; the second has no GPU to go to."""
    del fake_cuda.generators[1]  # one GPU here
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    states = [torch.Generator().manual_seed(seed).get_state() for seed in (11, 12)]
    set_rng_state({**rng_state(), "cuda": states})
    assert torch.equal(fake_cuda.generators[0].get_state(), states[0])


SIZING_MODULES = ("evaluation/iwae.py", "engine/memory.py", "data/batches.py")


def _private_torch_uses(source: str) -> list[str]:
    """Names under ``torch`` with a private part (``torch._C``, ``torch.cuda._lazy_init``, ``from
    torch._subclasses import ...``) used in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            parts, inner = [node.attr], node.value
            while isinstance(inner, ast.Attribute):
                parts.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id in ("torch", "nn"):
                parts.append(inner.id)
                name = ".".join(reversed(parts))
                if any(p.startswith("_") and not p.startswith("__") for p in parts):
                    found.append(name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            module = getattr(node, "module", None) or ""
            names = [module] if module else []
            names += [f"{module}.{a.name}" if module else a.name for a in node.names]
            for name in names:
                if name.split(".")[0] == "torch" and any(p.startswith("_") for p in name.split(".")):
                    found.append(name)
    return found


def test_no_private_torch_api_sizes_memory():
    """(e) The code that sizes chunks, batches and memory (k_chunk, the data's placement, the
    up-front estimate) uses public torch only; the check itself catches private names."""
    assert sorted(_private_torch_uses("import torch\nfree = torch.cuda._lazy_init()\nfrom torch._C import x")) == [
        "torch._C",
        "torch._C.x",
        "torch.cuda._lazy_init",
    ]
    package = Path(pyro_vae.__file__).parent
    for name in SIZING_MODULES:
        assert _private_torch_uses((package / name).read_text()) == [], name
