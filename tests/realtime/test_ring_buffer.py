"""The SPSC ring: exact order across wrap-around, drops counted, never overwrites unread data."""

from __future__ import annotations

import threading

import numpy as np

from realtime.ring import RingBuffer


def test_wraps_around_and_keeps_order():
    ring = RingBuffer(10, channels=2)
    data = np.arange(40, dtype=np.float32).reshape(20, 2)
    assert ring.write(data[:7])
    out, start = ring.read(5)
    assert start == 0 and np.array_equal(out, data[:5])
    assert ring.write(data[7:15])  # wraps
    out, start = ring.read()
    assert start == 5 and np.array_equal(out, data[5:15])
    assert ring.write_index == 15 and ring.read_index == 15


def test_full_ring_drops_the_new_block_and_counts_it():
    ring = RingBuffer(8)
    assert ring.write(np.ones((6, 1), np.float32))
    assert not ring.write(np.full((3, 1), 2.0, np.float32))
    assert ring.dropped_frames == 3
    out, _ = ring.read()
    assert np.array_equal(out[:, 0], np.ones(6))  # unread data intact


def test_overflow_flags_and_capture_time_are_recorded():
    ring = RingBuffer(8)
    ring.write(np.zeros((4, 1), np.float32), capture_time=123.5, overflow=True)
    assert ring.overflows == 1 and ring.last_capture == (4, 123.5)


def test_one_producer_one_consumer_threads_lose_nothing():
    ring = RingBuffer(1000)
    total = 200_000
    received = []

    def produce():
        sent = 0
        while sent < total:
            n = min(137, total - sent)
            block = np.arange(sent, sent + n, dtype=np.float32)[:, None]
            if ring.write(block):
                sent += n

    t = threading.Thread(target=produce)
    t.start()
    got = 0
    while got < total:
        out, start = ring.read()
        assert start == got
        received.append(out[:, 0])
        got += len(out)
    t.join(5)
    assert np.array_equal(np.concatenate(received), np.arange(total, dtype=np.float32))


def test_wait_wakes_on_a_write_and_times_out_without_one():
    import threading
    import time

    ring = RingBuffer(100)
    started = time.perf_counter()
    assert not ring.wait(0.05)
    assert time.perf_counter() - started >= 0.045
    ring.write(np.zeros((3, 1), np.float32))
    assert ring.wait(10.0)  # data already there: no wait
    ring.read()
    timer = threading.Timer(0.05, ring.write, args=(np.ones((2, 1), np.float32),))
    started = time.perf_counter()
    timer.start()
    assert ring.wait(10.0)
    assert time.perf_counter() - started < 5.0 and ring.available() == 2


def test_wait_for_frames_sleeps_through_smaller_writes():
    """A consumer waiting for N frames is not woken by each 10 ms block, only by the one that
    brings the unread frames to N (or by the timeout)."""
    import threading
    import time

    ring = RingBuffer(1000)
    writes = threading.Thread(
        target=lambda: [(ring.write(np.zeros((10, 1), np.float32)), time.sleep(0.01)) for _ in range(10)]
    )
    started = time.perf_counter()
    writes.start()
    assert ring.wait(10.0, frames=95)
    assert ring.available() >= 95 and time.perf_counter() - started >= 0.08  # the 10th write, not the 1st
    writes.join()
    assert not ring.wait(0.05, frames=101)  # 100 there: times out
    assert ring.wait(0.0, frames=100)  # already there: no wait
