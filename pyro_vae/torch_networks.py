"""Plain torch networks held by Pyro modules: ``decoder = TorchNetwork()`` in a ``PyroModule``.

Reading an ``nn.Module`` attribute of a ``PyroModule`` inside a Pyro program announces every
parameter of that network to Pyro's effect handlers, one ``param`` message per parameter per read
(``PyroModule.__getattr__``). With module-local parameters, the engine's mode, nothing consumes
those messages: the engine's optimizer steps the module's own ``parameters()``. On a small model
they were about a tenth of a training step's host time. A :class:`TorchNetwork` attribute is read
directly in that mode; with Pyro's global param store (the textbook ``SVI`` loop of notebook 01)
it is read through ``PyroModule``, which registers the network's parameters there as
``pyro.module`` would. The network itself stays an ordinary torch module, stored, saved and moved
like any other submodule.
"""

from __future__ import annotations

import pyro
from pyro.nn import PyroModule


class TorchNetwork:
    """A ``PyroModule`` attribute holding a plain torch network (assign it as usual in ``__init__``)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, module: PyroModule | None, owner: type | None = None):
        if module is None:
            return self
        if not pyro.settings.get("module_local_params"):  # the global param store: register there
            return PyroModule.__getattr__(module, self.name)
        try:
            return module._modules[self.name]
        except KeyError:
            raise AttributeError(f"{type(module).__name__} has no network {self.name!r} yet") from None


__all__ = ["TorchNetwork"]
