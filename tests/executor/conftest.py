"""Fixtures of the executor drills."""

from __future__ import annotations

import pytest

from tests.executor.rig import ExecutorRig


@pytest.fixture
def rig(tmp_path):
    """An installation not yet started (``rig.up(*entries)`` registers and starts it)."""
    installation = ExecutorRig(tmp_path)
    try:
        yield installation
    finally:
        installation.stop()
