"""DeviceBatches: every image once per epoch, seeded shuffles, and an exact resume."""

import io

import pytest
import torch

from pyro_vae.data import DeviceBatches
from pyro_vae.errors import CheckpointError, ConfigError

NUM_ITEMS = 103  # not a multiple of the batch size: the last batch is short
BATCH_SIZE = 10


def make_batches(binarization="none", seed=0, device="cpu", **kwargs):
    """Batches over images whose pixels all equal their index / N, labelled by their index."""
    index = torch.arange(NUM_ITEMS)
    images = (index.float() / NUM_ITEMS).view(-1, 1, 1, 1).expand(-1, 1, 28, 28).contiguous()
    return DeviceBatches(images, index, BATCH_SIZE, binarization=binarization, seed=seed, device=device, **kwargs)


def epoch(batches):
    """One epoch as (x, y) concatenated over its batches."""
    xs, ys = zip(*batches, strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_each_epoch_covers_every_index_exactly_once_in_a_new_order():
    batches = make_batches()
    assert len(batches) == 11
    sizes = [y.shape[0] for _, y in batches]
    assert sizes == [BATCH_SIZE] * 10 + [3]
    (x1, y1), (_, y2) = epoch(batches), epoch(batches)
    assert torch.equal(y1.sort().values, torch.arange(NUM_ITEMS))
    assert torch.equal(y2.sort().values, torch.arange(NUM_ITEMS))
    assert not torch.equal(y1, y2)
    assert torch.equal(x1[:, 0, 0, 0], y1.float() / NUM_ITEMS)  # images travel with their labels


def test_drop_last_drops_the_short_batch():
    batches = make_batches(drop_last=True)
    assert len(batches) == 10
    _, y = epoch(batches)
    assert y.shape[0] == 10 * BATCH_SIZE and y.unique().shape[0] == y.shape[0]


def test_without_shuffle_batches_come_in_index_order():
    _, y = epoch(make_batches(shuffle=False))
    assert torch.equal(y, torch.arange(NUM_ITEMS))


def test_order_depends_on_the_seed_only():
    torch.manual_seed(1)
    _, a = epoch(make_batches(seed=7))
    torch.manual_seed(2)
    _, b = epoch(make_batches(seed=7))
    _, c = epoch(make_batches(seed=8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("binarization", ["none", "dynamic"])
def test_state_dict_round_trip_repeats_the_next_epoch_exactly(binarization):
    batches = make_batches(binarization, seed=0)
    epoch(batches)
    saved = io.BytesIO()
    torch.save(batches.state_dict(), saved)  # as a checkpoint would store it
    x_next, y_next = epoch(batches)
    resumed = make_batches(binarization, seed=123)
    saved.seek(0)
    resumed.load_state_dict(torch.load(saved, weights_only=True))
    x_resumed, y_resumed = epoch(resumed)
    assert torch.equal(y_resumed, y_next) and torch.equal(x_resumed, x_next)


@pytest.mark.parametrize("binarization", ["none", "dynamic"])
def test_a_run_changes_device_between_epochs_and_back(binarization):
    """The sampler's state is a CPU generator's whatever the device, the same size everywhere:
    a CPU run's state resumes on another device (``meta``, data-free, standing in for a GPU; a
    GPU generator's state is 16 bytes, a CPU one's 5056), and that device's state resumes on
    the CPU, where the next epoch equals the uninterrupted CPU run's. Every device draws the
    same permutation from the same state (on a real GPU the binarization noise comes from the
    GPU's own generator, so only the permutation is shared)."""
    straight = make_batches(binarization, seed=5)
    epoch(straight)
    other = make_batches(binarization, seed=0, device="meta")
    other.load_state_dict(straight.state_dict())  # CPU -> the other device
    x_other, y_other = epoch(other)  # epoch 2 there
    assert x_other.device.type == "meta" and y_other.device.type == "meta"
    epoch(straight)  # epoch 2 here
    assert torch.equal(other.state_dict()["generator"], straight.state_dict()["generator"])  # same draws
    back = make_batches(binarization, seed=0)
    back.load_state_dict(other.state_dict())  # and back to the CPU
    (x_back, y_back), (x_straight, y_straight) = epoch(back), epoch(straight)  # epoch 3
    assert torch.equal(y_back, y_straight) and torch.equal(x_back, x_straight)
    assert other.state_dict()["generator"].numel() == torch.Generator().get_state().numel()


def test_an_earlier_gpu_runs_sampler_state_is_refused_clearly():
    batches = make_batches()
    with pytest.raises(
        CheckpointError,
        match="holds 16 bytes, not a CPU generator's 5056: it was written by an earlier pyro-vae on a GPU",
    ):
        batches.load_state_dict({"generator": torch.zeros(16, dtype=torch.uint8)})


def test_batch_size_below_one_is_refused():
    with pytest.raises(ConfigError, match="batch size must be at least 1, got 0"):
        DeviceBatches(torch.zeros(2, 1), torch.zeros(2), 0, binarization="none", seed=0, device="cpu")


def test_unknown_binarization_is_refused():
    with pytest.raises(ConfigError, match="unknown binarization 'half'; choose one of: dynamic, static, none"):
        DeviceBatches(torch.zeros(2, 1), torch.zeros(2), 1, binarization="half", seed=0, device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_and_their_generator_live_on_cuda():
    batches = make_batches("dynamic", device="cuda")
    x, y = next(iter(batches))
    assert x.is_cuda and y.is_cuda and batches.noise.device.type == "cuda"
    assert batches.generator.device.type == "cpu"  # the state a checkpoint holds
    state = batches.state_dict()
    x_next, _ = epoch(batches)
    batches.load_state_dict(state)
    assert torch.equal(epoch(batches)[0], x_next)
