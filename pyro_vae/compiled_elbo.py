"""``--compile``: the training loss (Pyro's ELBO module) run as a ``torch.compile``-d graph of its
tensor operations, one graph per batch shape.

``torch.compile`` cannot follow Pyro's handlers: Dynamo breaks the graph at every sample site
(Pyro's messages are ``TypedDict`` objects with optional keys, ``pyro.settings`` imports modules
at run time, messengers call functions with ``*args``), and the pieces between the breaks are a
few operations each. So the loss is captured first, the way ``torch.jit.trace`` captures it:
``make_fx`` runs the model and the guide once, through all of Pyro's Python, and records the
aten operations they issue (random draws included) as one FX graph whose inputs are the
parameters, the buffers, the mini-batch scale N / B, the KL weight beta and the batch. That
graph has no Python left in it, and ``torch.compile`` (inductor) compiles it whole, with its
backward. Random draws run torch's own kernels (inductor's ``fallback_random``), so a compiled
step draws what an eager step draws from the global generator.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import pyro
import torch
from pyro.infer.util import is_validation_enabled
from torch.fx.experimental.proxy_tensor import make_fx
from torch.overrides import TorchFunctionMode

from .errors import ConfigError


def compiler_problem(device: torch.device) -> str | None:
    """Why inductor cannot compile for ``device`` here (in words that name the fix), or None."""
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "torch.compile's inductor backend needs Triton on a GPU (pip install triton)"
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception:  # inductor's own error (InvalidCxxCompiler), or no inductor in this torch
        return (
            "torch.compile's inductor backend needs a C++ compiler on the CPU and none was found "
            "(install g++, e.g. apt-get install g++, or name one with the CXX environment variable)"
        )
    return None


def compile_backend(device: torch.device, log: Callable[[str], None]) -> str | None:
    """The backend ``--compile`` uses on ``device``: ``"inductor"``, or None (the captured graph
    runs uncompiled) where inductor cannot compile here, which ``log`` is told in words."""
    problem = compiler_problem(torch.device(device))
    if problem is None:
        return "inductor"
    log(
        f"--compile: {problem}; until then the captured graph of the loss runs uncompiled "
        "(no speed-up beyond skipping Pyro's Python)"
    )
    return None


@contextlib.contextmanager
def _tensors_replaced(module: torch.nn.Module, values: dict[int, torch.Tensor]) -> Iterator[None]:
    """Every parameter and buffer ``t`` of ``module`` (wherever it is registered, shared ones
    included) replaced by ``values[id(t)]`` while inside, put back after: a capture then sees them
    as the graph's inputs, not as constants."""
    saved = []
    for owner in module.modules():
        for table in (owner._parameters, owner._buffers):
            for leaf, tensor in table.items():
                if tensor is not None and id(tensor) in values:
                    saved.append((table, leaf, tensor))
                    table[leaf] = values[id(tensor)]
    try:
        yield
    finally:
        for table, leaf, tensor in saved:
            table[leaf] = tensor


def _one_fake_mode() -> contextlib.AbstractContextManager:
    """A context in which ``make_fx`` describes every captured tensor (each node's metadata) with
    one fake-tensor mode, instead of building a new mode per node (half the capture's time)."""
    from torch._guards import TracingContext, tracing
    from torch._subclasses.fake_tensor import FakeTensorMode

    return tracing(TracingContext(FakeTensorMode(allow_fallback_kernels=True)))


class _OneHotUnchecked(TorchFunctionMode):
    """While active, ``F.one_hot(y, C)`` is computed as torch computes it (zeros, then a scatter
    of ones), without torch's check that the labels lie in [0, C), which reads them on the host
    and so cannot be captured; the validated first step runs the checked one."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.one_hot:
            labels, classes = args[0], args[1] if len(args) > 1 else kwargs.get("num_classes", -1)
            if classes >= 0:
                ones = torch.zeros(*labels.shape, classes, dtype=labels.dtype, device=labels.device)
                return ones.scatter_(-1, labels.unsqueeze(-1), 1)
        return func(*args, **kwargs)


class CompiledELBO(torch.nn.Module):
    """A loss module (Pyro's ``Trace_ELBO()(Scaled(model), Scaled(guide))``) run as a compiled
    graph of its tensor operations, one per shape of the batch (the last, smaller batch of an
    epoch gets its own); called as the module is, ``loss(x, y, data_scale, beta)``.

    The parameters, the buffers (batch norm's running statistics, updated in place as eagerly),
    N / B and beta are the graph's inputs, so they change between steps as they do eagerly, and
    gradients flow to the parameters. The first call with Pyro's validation on runs eagerly, so
    bad data is still caught; captures are made and run with validation off (its checks read
    values on the host). A loss that reads a tensor's value on the host while it runs (a Python
    ``if`` on a tensor, ``.item()``) cannot be captured: the first compiled call says so.

    ``backend`` is ``"inductor"``, or None to run the captured graph as it is, uncompiled (no
    C++ compiler: Pyro's Python is still skipped). The parameters are the wrapped module's, so
    one optimizer over ``parameters()`` trains it.
    """

    def __init__(self, loss_module: torch.nn.Module, backend: str | None = "inductor"):
        super().__init__()
        self.loss_module = loss_module
        self.backend = backend
        self.graphs: dict[tuple, Callable] = {}
        self.state: list[torch.Tensor] | None = None  # the graphs' first inputs, once parameters exist
        self.validated = False

    def _key(self, batch: tuple) -> tuple:
        return tuple((a.shape, a.dtype, a.device) if isinstance(a, torch.Tensor) else a for a in batch) + (
            self.training,
            torch.is_autocast_enabled(),
        )

    def _state(self) -> list[torch.Tensor]:
        """The parameters and buffers of the loss module, each once: the graph's first inputs."""
        if self.state is None:  # after the first call: lazily created parameters exist
            tensors = {id(t): t for t in (*self.loss_module.parameters(), *self.loss_module.buffers())}
            self.state = list(tensors.values())
        return self.state

    def _capture(self, state: list[torch.Tensor], inputs: tuple) -> torch.fx.GraphModule:
        """The loss's aten operations on ``inputs`` as one FX graph of ``(*state, *inputs)``."""
        count = len(state)

        def loss(*flat):
            values = {id(t): v for t, v in zip(state, flat[:count])}
            with _tensors_replaced(self.loss_module, values), _OneHotUnchecked():
                return self.loss_module(*flat[count:])

        cuda = sorted({a.device for a in inputs if isinstance(a, torch.Tensor) and a.is_cuda}, key=str)
        # capturing runs the loss once: its random draws are given back, so the compiled call
        # draws what an eager call would have, and batch norm's running statistics are put back
        saved = [(b, b.clone()) for b in self.loss_module.buffers()]
        with warnings.catch_warnings(), torch.random.fork_rng(devices=cuda):
            warnings.simplefilter("ignore")  # make_fx's notes on Pyro's Python
            try:
                with _one_fake_mode():
                    graph = make_fx(loss)(*state, *inputs)
            except RuntimeError as e:
                if "_local_scalar_dense" not in str(e):
                    raise
                raise ConfigError(
                    "--compile captures the loss's tensor operations once per batch shape, and this "
                    "loss reads a tensor's value on the host while it runs (a Python `if` on a tensor, "
                    "`.item()`, `float(t)`); such a loss trains eagerly (drop --compile)"
                ) from None
            finally:
                with torch.no_grad():
                    for buffer, value in saved:
                        buffer.copy_(value)
        if any(True for _ in graph.parameters()):  # a parameter not among the inputs: no gradient
            raise ConfigError("--compile: the loss uses a parameter that is not its module's own (drop --compile)")
        return graph

    def _compiled(self, graph: torch.fx.GraphModule) -> Callable:
        if self.backend is None:
            return graph
        # random draws by torch's kernels, as eagerly; one static graph per batch shape
        return torch.compile(
            graph, backend=self.backend, fullgraph=True, dynamic=False, options={"fallback_random": True}
        )

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, data_scale: float = 1.0, beta: float = 1.0
    ) -> torch.Tensor:
        if is_validation_enabled() and not self.validated:
            self.validated = True
            return self.loss_module(x, y, data_scale, beta)  # eager and validated, once
        batch = (x,) if y is None else (x, y)
        # the scales as 0-dim CPU tensors: inputs of the graph, combined with tensors on any device
        scales = (torch.tensor(data_scale, dtype=torch.float64), torch.tensor(beta, dtype=torch.float64))
        inputs = (x, y, *scales)
        state = self._state()
        key = self._key(batch)
        with pyro.validation_enabled(False):
            if key not in self.graphs:
                self.graphs[key] = self._compiled(self._capture(state, inputs))
            return self.graphs[key](*state, *inputs)
