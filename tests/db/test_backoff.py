"""db.backoff: the doubling, the cap and the jitter."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from db.backoff import backoff

S = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("base", "attempt", "cap", "expected"),
    [
        (60 * S, 1, None, 60 * S),
        (60 * S, 2, None, 120 * S),
        (60 * S, 3, None, 240 * S),
        (60 * S, 6, None, 1920 * S),
        (60 * S, 7, None, 3600 * S),
        (60 * S, 500, None, 3600 * S),
        (S / 10, 4, 2 * S, S * 0.8),
        (S / 10, 10, 2 * S, 2 * S),
        (timedelta(0), 5, None, timedelta(0)),
    ],
)
def test_backoff_doubles_up_to_the_cap(base, attempt, cap, expected):
    kwargs = {"cap": cap} if cap else {}
    assert backoff(base, attempt, **kwargs) == expected


def test_backoff_jitter_stays_within_bounds_and_cap():
    rng = random.Random(1)
    delays = [backoff(10 * S, 2, jitter=0.2, rng=rng) for _ in range(200)]
    assert min(delays) >= 16 * S and max(delays) <= 24 * S
    assert len(set(delays)) > 100
    assert backoff(3600 * S, 3, jitter=0.5, rng=rng) <= timedelta(hours=1)


@pytest.mark.parametrize(
    "kwargs", [{"attempt": 0}, {"attempt": 1, "jitter": 1.0}, {"attempt": 1, "base": -S}]
)
def test_backoff_refuses_nonsense(kwargs):
    args = {"base": S, **kwargs}
    with pytest.raises(ValueError):
        backoff(args.pop("base"), args.pop("attempt"), **args)
