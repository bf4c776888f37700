from __future__ import annotations

import os
import re
import time
import uuid

from agent import ids
from agent.ids import uuid7, uuid7_time_ms

_LAYOUT = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_an_id_has_the_rfc_9562_version_7_layout_and_carries_its_millisecond() -> None:
    now_ns = time.time_ns() + 50_000_000  # later than any id made so far in this process
    event_id = uuid7(now_ns)
    u = uuid.UUID(event_id)
    assert _LAYOUT.match(event_id)
    assert u.version == 7 and u.variant == uuid.RFC_4122
    assert str(u) == event_id
    assert uuid7_time_ms(event_id) == now_ns // 1_000_000


def test_ids_stay_in_order_when_the_clock_steps_back_and_the_counter_runs_out() -> None:
    start = time.time_ns() + 100_000_000
    made = [uuid7(start)] + [uuid7(start - 5_000_000_000) for _ in range(5000)] + [uuid7(start + 1_000_000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    # 5,000 ids in one millisecond overflow the 12-bit counter: later ones borrow the next milliseconds
    assert uuid7_time_ms(made[-2]) > start // 1_000_000


def test_random_bits_are_not_repeated_across_many_ids() -> None:
    tails = {uuid7()[19:] for _ in range(3 * 512 + 7)}  # more than one pool of random words
    assert len(tails) == 3 * 512 + 7


def test_a_forked_child_does_not_reuse_the_parents_random_bits() -> None:
    uuid7()  # the parent holds a partly used pool of random words
    parent_next = [uuid7()[24:] for _ in range(20)]  # noqa: F841 - advance the pool a little
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids and leave without running the test runner's cleanup
        try:
            os.write(write_end, " ".join(uuid7()[24:] for _ in range(20)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child = pipe.read().decode().split()
    os.waitpid(pid, 0)
    mine = [uuid7()[24:] for _ in range(20)]
    assert len(child) == 20
    assert not set(child) & set(mine)
    assert ids._pool_next <= ids._POOL_DRAWS
