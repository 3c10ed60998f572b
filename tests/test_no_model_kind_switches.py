"""The loop, the tools and the helpers never ask which model kind they run: that is the variants'
job (pyro_vae/variants/), so adding a kind is one module and one registry line."""

import re
from pathlib import Path

import pyro_vae
from pyro_vae.variants import VARIANTS

PACKAGE = Path(pyro_vae.__file__).parent
KIND = "|".join(re.escape(name) for name in VARIANTS.names())
SWITCH = re.compile(rf"""\.model\s*(==|!=|\bin\b|\bnot in\b)\s*[\(\[\{{]?\s*['"]({KIND})['"]""")


def test_no_model_kind_comparison_outside_the_variants():
    found = []
    for path in PACKAGE.rglob("*.py"):
        if "variants" in path.relative_to(PACKAGE).parts:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if SWITCH.search(line):
                found.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not found, "model-kind switches outside pyro_vae/variants/:\n" + "\n".join(found)


def test_the_pattern_catches_a_switch():
    assert SWITCH.search('if config.model == "m2":') and SWITCH.search("x = cfg.model in ('cvae', 'm2')")
    assert not SWITCH.search("variant_of(config).sums_over_labels")
