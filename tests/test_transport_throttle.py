"""The one log throttle (transport.throttle), with a fake clock value."""

from __future__ import annotations

import math

import pytest

from transport.throttle import SUMMARY_LINES, RateLimiter


def test_lines_per_key_and_in_all_then_a_summary_per_key_a_window_later():
    limiter = RateLimiter(per_key=2, total=3, window_s=1.0)
    allowed = [limiter.allow(key, 0.1) for key in ("a", "a", "a", "b", "b", "c")]
    assert allowed == [True, True, False, True, False, False]  # b's second and c: the total of 3 is used up
    assert limiter.summary(0.5) == [] and limiter.next_summary() == 1.1
    assert limiter.summary(1.1) == [("a", 1), ("b", 1), ("c", 1)]
    assert limiter.summary(5.0) == [] and limiter.next_summary() == math.inf
    assert limiter.allow("a", 1.2) and limiter.allow("a", 1.3)  # a new window
    assert not limiter.allow("a", 1.4)
    assert limiter.summary(1.5, force=True) == [("a", 1)]


def test_a_summary_names_the_busiest_keys_and_lumps_the_rest():
    limiter = RateLimiter(per_key=1, total=1, window_s=1.0)
    limiter.allow("first", 0.0)
    for i in range(30):
        for _ in range(i + 1):
            limiter.allow(f"k{i:02d}", 0.0)
    summary = limiter.summary(1.0)
    assert len(summary) == SUMMARY_LINES and summary[0] == ("k29", 30)
    assert summary[-1][0] == "others" and sum(n for _, n in summary) == sum(range(1, 31))


@pytest.mark.parametrize("kwargs", [{"per_key": 0, "total": 1, "window_s": 1.0},
                                    {"per_key": 2, "total": 1, "window_s": 1.0},
                                    {"per_key": 1, "total": 1, "window_s": 0.0}])
def test_bad_settings(kwargs):
    with pytest.raises(ValueError):
        RateLimiter(**kwargs)
