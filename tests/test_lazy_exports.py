"""A lazily exported name must not also be a submodule of its package.

Once ``import pkg.name`` has run (anywhere in the process), Python sets the attribute ``pkg.name``
to that submodule, and a later ``from pkg import name`` returns the module instead of the function
the lazy export promises.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

PACKAGES = [
    "loyalkit.callbacks",
    "loyalkit.compression",
    "loyalkit.robustness",
    "loyalkit.study",
    "loyalkit.metrics",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_exports_do_not_share_a_name_with_a_submodule(name: str) -> None:
    package = importlib.import_module(name)
    submodules = {info.name for info in pkgutil.iter_modules(package.__path__)}
    assert not set(package.__all__) & submodules


def test_adversarial_loyalty_is_the_function_after_its_module_is_imported() -> None:
    importlib.import_module("loyalkit.robustness.adversarial_transfer")
    from loyalkit.robustness import adversarial_loyalty

    assert callable(adversarial_loyalty) and adversarial_loyalty.__name__ == "adversarial_loyalty"
