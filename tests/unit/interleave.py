"""A seeded thread schedule for race tests.

CPython 3.11 switches threads only at calls and backward jumps, so a check-then-set or a
``+=`` between two threads almost never interleaves in a test, and a race test of it could
not fail. Inside :func:`yielding_inside`, every thread running one of the given functions
gives up the GIL at a seeded random choice of its bytecode instructions: the interleavings
a loaded machine (or a free-threaded build) produces rarely show up in a few hundred runs.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

Tracer = Callable[[FrameType, str, Any], Any]


@contextmanager
def yielding_inside(
    *functions: Callable[..., Any], seed: int = 0, probability: float = 0.5
) -> Iterator[None]:
    """Threads started inside the block (and this one) yield at random opcodes of
    ``functions`` (their own code only, not what they call)."""
    codes = {getattr(f, "__func__", f).__code__ for f in functions}
    rng = random.Random(seed)
    rng_lock = threading.Lock()  # the seeded sequence, shared by every thread

    def at_opcode(frame: FrameType, event: str, arg: Any) -> Tracer:
        if event == "opcode":
            with rng_lock:
                switch = rng.random() < probability
            if switch:
                time.sleep(0)  # releases the GIL: a waiting thread runs now
        return at_opcode

    def on_call(frame: FrameType, event: str, arg: Any) -> Tracer | None:
        if frame.f_code in codes:
            frame.f_trace_opcodes = True
            return at_opcode
        return None

    previous, previous_threads = sys.gettrace(), threading.gettrace()
    threading.settrace(on_call)
    sys.settrace(on_call)
    try:
        yield
    finally:
        threading.settrace(previous_threads)  # type: ignore[arg-type]
        sys.settrace(previous)


def run_together(*calls: Callable[[], object]) -> None:
    """Run each call on its own thread, released at the same moment; wait for all."""
    barrier = threading.Barrier(len(calls))

    def body(call: Callable[[], object]) -> None:
        barrier.wait()
        call()

    threads = [threading.Thread(target=body, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
