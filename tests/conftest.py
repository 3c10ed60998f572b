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


# The longest tests, the longest first (a group by what its tests take together), by node id prefix:
# a file whose tests share a module-scoped fixture (so that one worker runs them all and builds the
# fixture once), a test, or one case of it.
LONGEST_FIRST = (
    "tests/test_distributed.py",
    "tests/test_notebooks.py::test_notebook_runs[03_",
    "tests/test_pinned_runs.py::test_seeded_run_matches_its_pinned_numbers",
    "tests/test_notebooks.py::test_notebook_runs[02_",
    "tests/test_notebooks.py::test_notebook_runs[04_",
    "tests/test_notebooks.py::test_notebook_runs[01_",
    "tests/test_run_folder.py",
    "tests/test_process_faults.py",
    "tests/test_notebooks.py::test_notebook_runs[06_",
    "tests/test_docs.py::test_readme_quick_start_and_python_example_run",
    "tests/test_notebooks.py::test_notebook_runs[05_",
    "tests/test_extensions.py::test_own_pieces_from_the_cli_train_reload_evaluate_generate",
    "tests/test_benchmarks.py::test_ddp_speed_writes_its_fields",
    "tests/test_own_model.py::test_an_own_model_in_two_processes_takes_the_one_process_steps",
    "tests/test_benchmarks.py::test_gradient_snr_writes_its_fields_and_reuses_its_trained_model",
    "tests/test_reproduce.py::test_two_processes_stop_together_on_rank_0s_decision",
    "tests/test_benchmarks.py::test_train_speed_with_compile_times_four_steps",
    "tests/test_own_model.py::test_an_own_model_file_trains_resumes_evaluates_generates_and_loads",
    "tests/test_vamp_memory.py::test_vamp_iaf_at_default_sizes_trains_under_a_memory_limit",
)


@pytest.hookimpl(trylast=True)  # after -k / -m have deselected tests: the shares count what runs
def pytest_collection_modifyitems(config, items):
    """Start the longest tests first on every worker, so that the workers finish together.

    ``--dist worksteal`` (pyproject.toml) hands worker k the next ``remaining // (workers - k)``
    tests of the collection; a worker that runs out takes the second half of the largest queue
    left. The groups of ``LONGEST_FIRST`` are dealt to the workers' shares in turn, each share
    starting with its long tests: a queue then ends on short tests, so that what an idle worker
    takes, and what runs last, is short. Without workers (``-n 0``) the long tests simply run
    first; the other tests keep their order."""
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    groups = [[] for _ in LONGEST_FIRST]
    short = []
    for item in items:
        rank = next((i for i, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)), None)
        (short if rank is None else groups[rank]).append(item)
    shares = [[] for _ in range(workers)]
    for rank, group in enumerate(groups):
        shares[rank % workers] += group
    ordered, remaining = [], len(items)
    for k, share in enumerate(shares):
        size = remaining // (workers - k)  # worker k's first queue
        fill = max(0, size - len(share))
        ordered += share + short[:fill]
        short = short[fill:]
        remaining -= len(share) + fill
    items[:] = ordered + short


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pyproject.toml): two worker processes, one torch thread each, or one on a
    machine with a single core; a test that starts processes of its own puts a timeout on them."""
    return min(2, os.cpu_count() or 1)
