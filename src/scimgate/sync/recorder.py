"""The recorder: durable records of what the followers applied, written in order on one
thread, off the followers' path.

A confirmed batch's record (cursor, deprovision confirmations, one ``sync.applied`` audit
event: a write transaction with an fsync, which also waits for SCIM writes' lock) used to
delay the follower's next change by 5-30 ms (traced). The follower now hands the record
over and is back on the change log at once. Records of batches waiting together are written
in one transaction (group commit: one fsync and one cursor update per wake-up of this
thread, however many batches were confirmed meanwhile; each batch keeps its own audit
event). If a record is lost (a crash in between), the restart resyncs and records the resync
instead; the change itself is in HAProxy either way.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from sqlalchemy.exc import SQLAlchemyError

from scimgate.sync.state import AppliedBatch
from scimgate.sync.threads import engine_thread

log = logging.getLogger("scimgate.sync")

#: Attempts per record when the store refuses it (then it is dropped, logged).
ATTEMPTS = 5
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0
#: Most confirmed batches written in one transaction.
GROUP_MAX = 256
#: After the first batch of a group, how long the recorder lets others gather before it
#: writes (without waking per batch: it sleeps, then takes what is queued). Records are off
#: every latency path (waiters are released at confirmation); a crash in this window loses
#: only records, and the restart's resync records what they would have.
LINGER_SECONDS = 0.05

Record = Callable[[], object]
WriteBatches = Callable[[Sequence[AppliedBatch]], object]


class Recorder:
    """Runs record jobs in the order they were handed in, on its own thread. A job is a
    callable, or an :class:`AppliedBatch`: consecutive batches go to ``write_batches``
    together."""

    def __init__(
        self, write_batches: WriteBatches | None = None, *, linger: float = LINGER_SECONDS
    ) -> None:
        # The queue and the stop event are the only state shared with other threads.
        self._jobs: queue.Queue[Record | AppliedBatch | None] = queue.Queue()
        self._stopping = threading.Event()
        self._linger = linger
        self._write_batches = write_batches
        self._thread = engine_thread(self._run, "sync-recorder")
        self.transactions = 0  # record transactions run (this thread writes it; tests)

    def start(self) -> None:
        self._thread.start()

    def record(self, job: Record | AppliedBatch) -> None:
        """Record later, in order; in the caller's thread when the recorder is not running
        (not started yet, or stopped)."""
        if self._thread.is_alive():
            self._jobs.put(job)
        else:
            self._run_job(job)

    def stop(self, timeout: float) -> None:
        """Record everything handed in so far, then end (waits up to ``timeout`` s)."""
        self._stopping.set()  # cuts a linger short
        self._jobs.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        held: Record | AppliedBatch | None = None
        while True:
            job = held if held is not None else self._jobs.get()
            held = None
            if job is None:
                return
            if not isinstance(job, AppliedBatch):
                self._run_job(job)
                continue
            group = [job]
            if self._linger > 0:
                # A timed sleep, not a timed get: a get would wake for every batch put.
                self._stopping.wait(self._linger)
            # Whatever else is already queued joins this transaction, up to the first job
            # that is not a batch (order is kept: it runs right after).
            while len(group) < GROUP_MAX:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if isinstance(more, AppliedBatch):
                    group.append(more)
                else:
                    held = more
                    if more is None:
                        self._run_job(functools.partial(self._write, group))
                        return
                    break
            self._run_job(functools.partial(self._write, group))

    def _write(self, group: Sequence[AppliedBatch]) -> None:
        if self._write_batches is None:
            raise RuntimeError("this recorder was given no way to write applied batches")
        self._write_batches(group)

    def _run_job(self, job: Record | AppliedBatch) -> None:
        if isinstance(job, AppliedBatch):
            self._run_job(functools.partial(self._write, [job]))
            return
        for attempt in range(ATTEMPTS):
            try:
                job()
                self.transactions += 1
                break
            except SQLAlchemyError as exc:
                log.warning(
                    "sync: could not record an applied batch",
                    extra={"attempt": attempt + 1, "error": str(exc)},
                )
                time.sleep(min(BACKOFF_MAX, BACKOFF_MIN * 2**attempt))
            except Exception:
                log.exception("sync: recorder error")
                break
