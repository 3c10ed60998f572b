"""Shared test set-up: Pyro validation on, a clean param store and a seed per test.

pyro-vae trains with ``pyro.infer.SVI``, which needs Pyro's global param store
(``module_local_params=False``; SVI fails on module-local parameters). Every ``VAE`` therefore
gets a unique name prefix, so two models in one process never share parameters.
"""

import pyro
import pytest
import torch

pytest_plugins = ["data_fixtures"]  # real MNIST / Fashion-MNIST, fetched once per session


@pytest.fixture(autouse=True)
def _pyro_settings():
    pyro.enable_validation(True)
    pyro.settings.set(module_local_params=False)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    torch.set_num_threads(2)
    yield
    pyro.clear_param_store()
