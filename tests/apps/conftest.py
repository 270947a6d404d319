"""The lab's lesson pages, read from the LESSONS list of apps/Home.py without running it."""

import ast
import sys
from pathlib import Path

import pytest

APPS = Path(__file__).resolve().parents[2] / "apps"
# The page tests share page_plots.py (their plots, images and charts alike) as a plain module.
sys.path.insert(0, str(Path(__file__).resolve().parent))
HOME = APPS / "Home.py"


def _lessons() -> list[tuple[str, str]]:
    for node in ast.parse(HOME.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "LESSONS":
            return ast.literal_eval(node.value)
    raise AssertionError("apps/Home.py has no LESSONS list")


LESSONS = _lessons()


@pytest.fixture
def lessons() -> list[tuple[str, str]]:
    """(page path relative to apps/, title) for every lesson page in the navigation."""
    return list(LESSONS)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "lesson" in metafunc.fixturenames:  # one test per lesson page
        metafunc.parametrize("lesson", LESSONS, ids=[path for path, _ in LESSONS])
