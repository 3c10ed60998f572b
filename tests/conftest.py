"""Shared test set-up: Pyro validation on, module-local parameters, a clean param store and a
seed per test.

pyro-vae trains Pyro's ELBO module with one torch optimizer: parameters live in the modules
(``module_local_params=True``, set here as the command-line tools set it), so two models in one
process never share them. Tests of Pyro's textbook ``SVI`` switch to the global param store
with ``pyro.settings.context(module_local_params=False)``.
"""

import os

import pyro
import pytest
import torch

# the trainer validates distribution arguments on every step in the tests, not only the first
os.environ["PYRO_VAE_VALIDATE_EVERY_STEP"] = "1"

pytest_plugins = ["data_fixtures"]  # real MNIST / Fashion-MNIST, fetched once per session


@pytest.fixture(autouse=True)
def _pyro_settings():
    pyro.enable_validation(True)
    pyro.settings.set(module_local_params=True)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    torch.set_num_threads(1)  # one thread per test process: the suite must pass beside a busy process per core
    yield
    pyro.clear_param_store()


@pytest.fixture
def one_thread():
    """For tests that push thousands of tiny (3x3, 12x6) tensors through torch: on a shared 2-core
    machine, 2 OpenMP threads made them up to 50x slower whenever another process was busy (each
    parallel region waits for a descheduled thread); 1 thread is as fast when idle."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def ppca():
    """A random probabilistic PCA model (6-D data, 3-D latent, sigma 0.5) with known log p(x)."""
    from pyro_vae.models.ppca import PPCA

    return PPCA.random(6, 3, sigma=0.5, seed=1)


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pyproject.toml): two worker processes, one torch thread each, or one on a
    machine with a single core; a test that starts processes of its own puts a timeout on them."""
    return min(2, os.cpu_count() or 1)
