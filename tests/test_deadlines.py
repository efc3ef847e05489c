"""Coarse deadlines: a wait past its bound gets its exception, one within it never does."""
import time

import gevent
import pytest

from localtunnel.transfer.deadlines import Deadlines, tick_for


class Late(Exception):
    pass


class Later(Exception):
    pass


def test_a_wait_past_its_bound_is_interrupted_within_a_tick():
    deadlines = Deadlines(0.02)
    started = time.monotonic()
    with pytest.raises(Late):
        with deadlines.bound(0.1, Late):
            gevent.sleep(5)
    assert 0.09 < time.monotonic() - started < 0.2


def test_a_block_that_ends_in_time_is_never_interrupted_later():
    deadlines = Deadlines(0.02)
    with deadlines.bound(0.05, Late):
        gevent.sleep(0.01)
    gevent.sleep(0.15)      # well past the old deadline, outside the block: nothing is thrown


def test_the_outer_bound_of_nested_bounds_still_holds():
    deadlines = Deadlines(0.02)
    with pytest.raises(Late):
        with deadlines.bound(0.1, Late):
            with deadlines.bound(10, Later):
                gevent.sleep(5)


def test_an_inner_bound_expiring_leaves_the_outer_one_in_force():
    deadlines = Deadlines(0.02)
    with pytest.raises(Late):
        with deadlines.bound(0.2, Late):
            with pytest.raises(Later):
                with deadlines.bound(0.05, Later):
                    gevent.sleep(5)
            gevent.sleep(5)


def test_many_waits_each_get_their_own_exception_and_the_sweeper_stops_when_idle():
    deadlines = Deadlines(0.02)

    def wait(seconds):
        try:
            with deadlines.bound(seconds, Late):
                gevent.sleep(5)
        except Late:
            return seconds

    jobs = [gevent.spawn(wait, 0.05 * (i + 1)) for i in range(20)]
    gevent.joinall(jobs, timeout=3)
    assert [job.value for job in jobs] == [0.05 * (i + 1) for i in range(20)]
    gevent.sleep(0.05)
    assert deadlines._sweeper is None and not deadlines._due


def test_tick_is_a_fifth_of_the_shortest_bound_within_limits():
    assert tick_for(10, 75, 300) == 1.0
    assert tick_for(0.5, 2) == 0.1
    assert tick_for(0.001) == 0.01
