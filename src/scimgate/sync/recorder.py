"""The recorder: durable records of what the followers applied, written in order on one
thread, off the followers' path.

A confirmed batch's record (cursor, deprovision confirmations, one ``sync.applied`` audit
event: a write transaction with an fsync, which also waits for SCIM writes' lock) used to
delay the follower's next change by 5-30 ms (traced). The follower now hands the record
over and is back on the change log at once. If a record is lost (a crash in between), the
restart resyncs and records the resync instead; the change itself is in HAProxy either way.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger("scimgate.sync")

#: Attempts per record when the store refuses it (then it is dropped, logged).
ATTEMPTS = 5
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0

Record = Callable[[], object]


class Recorder:
    """Runs record jobs in the order they were handed in, on its own thread."""

    def __init__(self) -> None:
        # The queue is the only state shared with other threads (it has its own lock).
        self._jobs: queue.Queue[Record | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="sync-recorder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def record(self, job: Record) -> None:
        """Record later, in order; in the caller's thread when the recorder is not running
        (not started yet, or stopped)."""
        if self._thread.is_alive():
            self._jobs.put(job)
        else:
            job()

    def stop(self, timeout: float) -> None:
        """Record everything handed in so far, then end (waits up to ``timeout`` s)."""
        self._jobs.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            for attempt in range(ATTEMPTS):
                try:
                    job()
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
