"""project.deferred: what a web process holds is sent in groups, when the group is full, when it
is overdue and when the server has nothing to do; elsewhere, at once."""

import logging

import pytest

from project import deferred
from tests.clock import StoppedClock


@pytest.fixture
def sent() -> list[dict[str, bytes]]:
    return []


@pytest.fixture
def clock(monkeypatch) -> StoppedClock:
    """project.deferred's clock, stopped: on a running one, a slow moment between two lines
    could make what is held overdue."""
    made = StoppedClock(1000.0)
    monkeypatch.setattr(deferred, "time", made)
    return made


@pytest.fixture
def buffer(sent, clock):
    made = deferred.SendBuffer(sent.append, max_items=3, max_age=0.05)
    yield made
    deferred._buffers.remove(made)
    deferred._enabled = False


def test_a_process_that_does_not_hold_sends_sends_at_once(buffer, sent):
    buffer.add({"a": b"1"})
    buffer.add({"b": b"2", "c": b"3"})
    assert sent == [{"a": b"1"}, {"b": b"2", "c": b"3"}]
    assert deferred.seconds_until_due() is None


def test_held_items_go_out_together_once_the_group_is_full(buffer, sent):
    deferred.enable()
    buffer.add({"a": b"1"})
    buffer.add({"b": b"2"})
    assert sent == [] and deferred.seconds_until_due() is not None
    buffer.add({"c": b"3", "d": b"4"})
    assert sent == [{"a": b"1", "b": b"2", "c": b"3", "d": b"4"}]
    assert deferred.seconds_until_due() is None


def test_before_a_request_only_what_has_waited_max_age_is_sent(buffer, sent, clock):
    deferred.enable()
    buffer.add({"a": b"1"})
    clock.advance(0.049)
    deferred.flush_overdue()
    assert sent == []
    clock.advance(0.002)
    deferred.flush_overdue()
    assert sent == [{"a": b"1"}]


def test_an_idle_server_sends_everything_held(buffer, sent):
    deferred.enable()
    buffer.add({"a": b"1"})
    deferred.flush_all()
    deferred.flush_all()
    assert sent == [{"a": b"1"}]


def test_a_failing_send_between_requests_is_logged_and_never_raised(caplog):
    def send(items: dict[str, bytes]) -> None:
        raise ConnectionError("memcached went away")

    failing = deferred.SendBuffer(send, max_items=10, max_age=1)
    try:
        deferred.enable()
        failing.add({"a": b"1"})
        with caplog.at_level(logging.WARNING, logger="project.deferred"):
            deferred.flush_all()
        assert "could not make a deferred send" in caplog.text
        assert deferred.seconds_until_due() is None
    finally:
        deferred._buffers.remove(failing)
        deferred._enabled = False


def test_a_waiting_server_knows_how_long_until_what_it_holds_is_due(buffer, clock):
    deferred.enable()
    assert deferred.seconds_until_due() is None
    buffer.add({"a": b"1"})
    clock.advance(0.02)
    assert deferred.seconds_until_due() == pytest.approx(0.03)
    clock.advance(0.04)
    assert deferred.seconds_until_due() == 0
