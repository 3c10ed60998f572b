"""A small name -> factory registry: the CLI offers a registry's keys, and a component defined
outside the package is used by its import path (``mypackage.priors:LaplacePrior``) or registered
under a name of its own.

A registry made with ``arguments`` (priors, guides, likelihoods, networks) calls every factory,
the package's own and a user's, with the keyword arguments its signature asks for, taken from
what the registry offers: a prior's class may take ``latent_dim`` alone, another ``spec``,
``config`` and ``guide``. Registries without ``arguments`` call their factories positionally.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")

PACKAGE = __name__.split(".")[0]


class Lazy:
    """An offered argument that is made only when a factory asks for it (e.g. a fresh encoder)."""

    def __init__(self, make: Callable[[], Any]):
        self.make = make


def is_import_path(value: Any) -> bool:
    """``"module.sub:Name"``: a component named by where it is defined."""
    return isinstance(value, str) and ":" in value


def import_object(path: str, what: str = "component") -> Any:
    """The object ``module:attr.attr`` names, or a :class:`ConfigError` saying what is missing."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{what} {path!r} is not an import path of the form module.sub:Name")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        hint = (
            " (__main__ is the script or notebook that trained the run: define the class in a "
            "module of its own to reload the run elsewhere)"
            if module_name == "__main__"
            else "; is its folder on PYTHONPATH, or its package installed?"
        )
        raise ConfigError(f"{what} {path!r}: cannot import {module_name} ({type(e).__name__}: {e}){hint}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{what} {path!r}: {module_name} has no {attr}") from None
    return obj


def import_path_of(obj: Any, what: str = "component") -> str:
    """The import path ``module:qualname`` that :func:`import_object` turns back into ``obj``
    (a class or a module-level function), or a :class:`ConfigError` if there is none."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise ConfigError(
            f"{what} {obj!r} cannot be recorded in config.json: it is not a class or function defined at "
            f"the top level of a module (a lambda or a local definition has no import path); define it "
            f"in a module, or register it by name"
        )
    return f"{module}:{qualname}"


def call_with_offered(factory: Callable, offered: Mapping[str, Any], what: str) -> Any:
    """``factory(**chosen)``: each parameter of its signature gets the offered value of that
    name (a :class:`Lazy` one is made now); parameters with defaults may be left out."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin without a signature: give it nothing
        return factory()
    kwargs = {}
    for name, p in params.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if name in offered:
            value = offered[name]
            kwargs[name] = value.make() if isinstance(value, Lazy) else value
        elif p.default is p.empty:
            raise ConfigError(
                f"{what} {_describe(factory)} asks for an argument {name!r}, which a {what} is not given; "
                f"its constructor (or factory) may take any of: {', '.join(offered)} (give {name!r} a "
                f"default, or read it from config)"
            )
    return factory(**kwargs)


def _describe(obj: Any) -> str:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}:{qualname}" if module and qualname else repr(obj)


class Registry(Generic[T]):
    """Maps names to factories; an unknown name is a :class:`ConfigError` listing the known ones.

    :param what: the kind of thing, for messages ("prior").
    :param arguments: maps the arguments of :meth:`build` to the named values offered to a
        factory (None: factories are called positionally).
    :param member: an import path names an object whose attribute ``member`` is the factory
        (the networks: one object with an ``encoder`` and a ``decoder``).
    :param accepts_own: a choice may be one's own component, by import path or (from Python) a
        class; true for every registry with ``arguments``, and for the model kinds.
    """

    def __init__(
        self,
        what: str,
        arguments: Callable[..., dict[str, Any]] | None = None,
        member: str | None = None,
        accepts_own: bool = False,
    ):
        self.what = what
        self.arguments = arguments
        self.accepts_own = accepts_own or arguments is not None
        self.member = member
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """``@REGISTRY.register("laplace")`` above a class or factory; the name then works as a
        choice (``--prior laplace``) in this process. A name must not contain ``:``."""
        if ":" in name:
            raise ValueError(f"{self.what} name {name!r} must not contain ':' (that marks an import path)")

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            known = self._factories.get(name)
            if known is not None and _describe(known) != _describe(factory):
                raise ValueError(
                    f"{self.what} {name!r} is registered twice ({_describe(known)} and {_describe(factory)})"
                )
            # (the same class defined again, e.g. a notebook cell run twice, replaces the old one)
            self._factories[name] = factory
            return factory

        return decorate

    def resolve(self, choice: Any) -> Callable[..., T]:
        """The factory of ``choice``: a registered name, an import path ``module:Name``, or (from
        Python) a class or function itself."""
        if isinstance(choice, str) and not is_import_path(choice):
            try:
                return self._factories[choice]
            except KeyError:
                raise ConfigError(
                    f"unknown {self.what} {choice!r}; choose one of: {', '.join(self.names())}, or give "
                    f"the import path of your own (module.sub:Name)"
                ) from None
        obj = import_object(choice, self.what) if isinstance(choice, str) else choice
        if self.member is not None:
            if not hasattr(obj, self.member):
                raise ConfigError(
                    f"{self.what} {_describe(obj)} has no attribute {self.member!r}: it must "
                    f"name an object with the attributes encoder and decoder (classes or "
                    f"factories)"
                )
            obj = getattr(obj, self.member)
        if not callable(obj):
            raise ConfigError(f"{self.what} {choice!r} is not a class or a function")
        return obj

    def get(self, name: Any) -> Callable[..., T]:
        return self.resolve(name)

    def build(self, choice: Any, *args, **kwargs) -> T:
        """Call ``choice``'s factory: with the offered keyword arguments its signature asks for
        (registries with ``arguments``), else with ``args`` and ``kwargs`` as given."""
        factory = self.resolve(choice)
        if self.arguments is None:
            return factory(*args, **kwargs)
        return call_with_offered(factory, self.arguments(*args, **kwargs), self.what)

    def record(self, choice: Any) -> str:
        """What config.json keeps for ``choice``: a name of this package stays a name; a class,
        function, or a name registered from outside the package, becomes its import path, so
        that a fresh process rebuilds it without the registration (a lambda stays a name)."""
        if isinstance(choice, str):
            if is_import_path(choice):
                self.resolve(choice)  # import it now: a typo is an error before training
                return choice
            factory = self.resolve(choice)
            if getattr(factory, "__module__", PACKAGE).split(".")[0] == PACKAGE or self.member is not None:
                return choice  # (a network registered by name is one half of a pair: it stays a name)
            try:
                return import_path_of(factory, self.what)
            except ConfigError:
                return choice  # only this process knows it (a lambda): load needs the registration
        self.resolve(choice)
        return import_path_of(choice, self.what)

    def names(self) -> list[str]:
        return list(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)
