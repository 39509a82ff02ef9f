"""A dependency the machine lacks (a server, Playwright's driver, chromium): the tests that need
it skip with the reason, or, with ``CI=true``, fail (a failure of the test, not an error)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

NEEDS_A_FROBNICATOR = """
import pytest

from tests.servers import unavailable


@pytest.fixture(scope="session")
def frobnicator():
    unavailable("the frobnicator is not installed")


def test_one(frobnicator):
    pass


def test_two(frobnicator):
    pass
"""


@pytest.mark.parametrize(("ci", "outcome"), [("", "2 skipped"), ("true", "2 failed")])
def test_a_missing_dependency_skips_locally_and_fails_in_ci(tmp_path, ci, outcome):
    (tmp_path / "test_frobnicator.py").write_text(textwrap.dedent(NEEDS_A_FROBNICATOR))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider"]
        + ["-p", "tests.conftest", "test_frobnicator.py"],
        cwd=tmp_path,
        env={**os.environ, "CI": ci, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.stdout.splitlines()[-1].startswith(outcome), run.stdout
    assert "error" not in run.stdout.splitlines()[-1]
    assert "the frobnicator is not installed" in run.stdout
