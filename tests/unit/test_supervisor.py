"""The restart back-off of `lsal run`'s supervisor (pure)."""

from __future__ import annotations

from backend.supervisor import Backoff


def test_restarts_back_off_while_a_child_keeps_dying_and_reset_once_it_stayed_up() -> None:
    backoff = Backoff(initial=1, max_delay=30, healthy_after=60)
    assert [backoff.next_delay(ran_for=2) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.next_delay(ran_for=61) == 1  # it ran long enough to count as healthy: start over
    assert backoff.next_delay(ran_for=0.5) == 2
