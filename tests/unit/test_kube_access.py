"""The rate at which access reviews may be asked of the Kubernetes API server."""

from __future__ import annotations

import time

import pytest

from cerise.kube import access


def test_reviews_beyond_the_burst_wait_for_the_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    budget = access._Budget(rate=2.0, burst=3)
    assert [budget.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one review's worth at 2 a second
    assert [budget.take() for _ in range(2)] == [True, False]
    now[0] += 60  # never more than the burst saved up
    assert sum(budget.take() for _ in range(10)) == 3
