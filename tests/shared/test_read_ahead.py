"""ReadAhead: items made in a background thread, in order, never more than `depth` ahead of the consumer."""

from __future__ import annotations

import threading
import time

import pytest

from shared.read_ahead import ReadAhead
from tests.conftest import wait_for


class Counted:
    """A source of 0, 1, 2, ... that counts the items it has started to make."""

    def __init__(self, stop_at: int = 1000) -> None:
        self.started = 0
        self.stop_at = stop_at
        self.lock = threading.Lock()

    def __iter__(self):
        for n in range(self.stop_at):
            with self.lock:
                self.started += 1
            yield n


@pytest.mark.parametrize("depth", [1, 2])
def test_never_more_than_depth_items_are_made_and_not_taken_the_one_being_made_included(depth):
    source = Counted()
    ahead = ReadAhead(iter(source), depth=depth)
    try:
        # Untouched, the producer makes `depth` items and waits: it does not start one more
        wait_for(lambda: source.started == depth, timeout=5)
        time.sleep(0.3)
        assert source.started == depth
        # Each item taken lets exactly one more be made, and they come in order
        assert [next(ahead) for _ in range(5)] == [0, 1, 2, 3, 4]
        wait_for(lambda: source.started == 5 + depth, timeout=5)
        time.sleep(0.3)
        assert source.started == 5 + depth
    finally:
        ahead.close()


def test_every_item_comes_once_in_order_then_the_end_and_a_producer_error_reaches_the_consumer():
    assert list(ReadAhead(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("bad row")

    ahead = ReadAhead(failing(), depth=2)
    assert next(ahead) == 1
    with pytest.raises(ValueError, match="bad row"):
        next(ahead)


def test_close_stops_the_producer_while_it_waits_for_room():
    source = Counted()
    ahead = ReadAhead(iter(source), depth=2)
    wait_for(lambda: source.started == 2, timeout=5)
    started = time.monotonic()
    ahead.close()
    assert time.monotonic() - started < 2
    assert not ahead._thread.is_alive() and source.started == 2
