"""The loop, the tools and the helpers never ask which model kind, prior, guide, likelihood,
network or ELBO they run: what a registered choice accepts or needs is an attribute of its class
(pyro_vae/variants/ for the model kinds), so adding one is a class and one registry line."""

import ast
import sys
from pathlib import Path

import pyro_vae
from pyro_vae.guides import GUIDES
from pyro_vae.models import LIKELIHOODS, PRIORS
from pyro_vae.nets import ENCODERS
from pyro_vae.objectives import ELBOS
from pyro_vae.variants import VARIANTS

PACKAGE = Path(pyro_vae.__file__).parent
COMPARISONS = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)


def registered_names() -> dict[str, set[Path]]:
    """Each registered name, with the files allowed to compare with it: those that register it
    (the registry's module and the module defining the registered class or factory)."""
    allowed: dict[str, set[Path]] = {}
    for registry in (VARIANTS, PRIORS, GUIDES, LIKELIHOODS, ENCODERS, ELBOS):
        for name in registry.names():
            factory = registry.resolve(name)
            modules = {getattr(factory, "__module__", None)}
            modules |= {
                m
                for m, module in sys.modules.items()
                if m.startswith("pyro_vae") and any(v is registry for v in vars(module).values())
            }
            allowed.setdefault(name, set()).update(Path(sys.modules[m].__file__) for m in modules if m in sys.modules)
    return allowed


def literals(node: ast.AST) -> list[str]:
    """The string literals of a comparison's operand, also inside a tuple, list or set."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for element in node.elts for s in literals(element)]
    return []


def switches(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) of each ==, !=, in or not in comparison with a literal that is one of ``names``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(isinstance(op, COMPARISONS) for op in node.ops):
            for operand in (node.left, *node.comparators):
                found += [(node.lineno, s) for s in literals(operand) if s in names]
    return found


def test_no_comparison_with_a_registered_name_outside_its_registering_module():
    allowed = registered_names()
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        for number, name in switches(source, set(allowed)):
            if path.resolve() not in {p.resolve() for p in allowed[name]}:
                line = source.splitlines()[number - 1].strip()
                found.append(f"{path.relative_to(PACKAGE)}:{number}: {name!r} in {line}")
    assert not found, (
        "comparisons with a registered name outside the module that registers it (read an "
        "attribute of the registered class instead):\n" + "\n".join(found)
    )


def test_the_check_catches_a_switch():
    names = {"m2", "cvae", "vamp", "iwae", "mlp", "bernoulli", "iaf"}
    assert switches('if config.model == "m2":\n    pass', names) == [(1, "m2")]
    assert switches("x = cfg.model in ('vae', 'cvae')", names) == [(1, "cvae")]
    assert switches('ok = "vamp" != prior', names) == [(1, "vamp")]
    assert switches("if config.elbo not in ['trace', 'iwae']: pass", names) == [(1, "iwae")]
    assert not switches("variant_of(config).sums_over_labels", names)
    assert not switches('name = "m2"', names)  # naming a choice is not a switch
