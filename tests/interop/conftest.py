"""Fixtures for the interop tests: the optional libraries, and the zoo models to export.

Each library fixture skips its tests when the extra is not installed, unless
TOYLAB_REQUIRE_INTEROP asks for it (set by .ci/run): "1" requires every extra, a
comma-separated list ("tl,nnsight") requires those only, and a missing one then fails.
"""

import importlib
import os

import pytest

import toylab
from toylab.zoo import recipe, shipped_path

EXTRAS = {"tl": "transformer_lens", "sae": "sae_lens", "nnsight": "nnsight"}


def _required(extra: str) -> bool:
    value = os.environ.get("TOYLAB_REQUIRE_INTEROP", "").strip()
    return value == "1" or extra in {v.strip() for v in value.split(",")}


def import_extra(extra: str):
    """The extra's module; skip the test if it is missing, or fail where it is required."""
    module = EXTRAS[extra]
    try:
        return importlib.import_module(module)
    except ImportError as err:
        reason = f'{module} is not installed ({err}); pip install torch==2.13.0 -e ".[{extra}]"'
        if _required(extra):
            pytest.fail(f"TOYLAB_REQUIRE_INTEROP={os.environ['TOYLAB_REQUIRE_INTEROP']} but {reason}",
                        pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def transformer_lens():
    return import_extra("tl")


@pytest.fixture(scope="session")
def nnsight():
    return import_extra("nnsight")


@pytest.fixture(scope="session")
def sae_lens():
    return import_extra("sae")


def zoo_models() -> list[tuple[str, int]]:
    """Every (zoo name, seed) with a shipped checkpoint."""
    out = []
    for name in toylab.zoo.names():
        for seed in recipe(name).seeds:
            if shipped_path(name, seed).is_dir():
                out.append((name, seed))
    return out


ZOO = zoo_models()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "zoo_entry" in metafunc.fixturenames:  # one test per shipped zoo transformer
        metafunc.parametrize("zoo_entry", ZOO, ids=[f"{n}-seed{s}" for n, s in ZOO])


_LOADED = {}


@pytest.fixture
def zoo_model(zoo_entry):
    """The shipped zoo model of ``zoo_entry``, loaded once per session (tests must not mutate it)."""
    if zoo_entry not in _LOADED:
        name, seed = zoo_entry
        _LOADED[zoo_entry] = toylab.zoo.load(name, seed=seed)
    return _LOADED[zoo_entry]
