"""A sweep's MLflow writes, made off the Tune loop by one thread, in the order they were asked for.

Ray Tune calls the sweep's callback (`sweep.tracking.TrackingCallback`) from its event loop and
starts no trial while a callback runs. Each MLflow write is a database commit (or an HTTP request
to a server, or a file copy for an artifact): done in the callback, a sweep of short trials spent
most of its overhead over bare Tune waiting on them (`benchmarks/bench_sweep_scale.py`). The
callback therefore records an event in the trial store -- the record, written before anything
else -- and hands the MLflow side to this writer.

One thread, first in first out: a trial's run is created before its metrics are logged and ended
after them, with no locking in the jobs. A job that fails stops the writer: the jobs after it are
dropped (they may log into a run that was never made) and the failure is raised in the driver at
its next `check` or `flush`, as if the callback had raised it. What was dropped, or lost with a
killed driver, is rebuilt from the store by `sweep.tracking.sync_runs` at `--resume`.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Optional

Job = Callable[[], None]


class MlflowWriter:
    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Optional[Job]] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._pending = 0
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._work, name="mlflow-writer", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        self.check()
        with self._idle:
            self._pending += 1
        self._jobs.put(job)

    def check(self) -> None:
        """Raise the failure of a job (once), in the caller's thread."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def flush(self, check: bool = True) -> None:
        """Wait until every job submitted so far is done; then `check` (unless told not to)."""
        with self._idle:
            self._idle.wait_for(lambda: self._pending == 0)
        if check:
            self.check()

    def close(self) -> None:
        """Finish the jobs submitted so far, then stop the thread (failures are not raised)."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()

    def _work(self) -> None:
        failed = False
        while (job := self._jobs.get()) is not None:
            try:
                if not failed:
                    job()
            except BaseException as e:  # noqa: BLE001 -- raised in the driver's thread by `check`
                failed, self._error = True, e
            finally:
                with self._idle:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.notify_all()
