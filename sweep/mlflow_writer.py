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

A busy store is not a failed job. Another process holding a sqlite store's lock (a person's
`mlflow ui` query, a backup, a second sweep's long write) made MLflow fail a write after about
20 s, which stopped the sweep (exit 3) and killed its running trials -- although MLflow is only a
view, and the trial store waits 60 s for the same kind of lock. `PatientClient` retries each MLflow
call that failed on a lock for up to `BUSY_WAIT_S` (one console line when it starts waiting); the
trials go on meanwhile, since the jobs are off Tune's loop. A call is one database transaction,
rolled back when it hit the lock, so retrying it writes nothing twice.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Optional

Job = Callable[[], None]
BUSY_WAIT_S = 600.0  # how long one MLflow call waits out a locked store before the sweep stops (exit 3)
_BUSY = ("database is locked", "database table is locked", "database is busy")


def is_busy(error: BaseException) -> bool:
    """The error (or one it was raised from) is a store's lock held by someone else."""
    seen: list[BaseException] = []
    while error is not None and error not in seen:
        seen.append(error)
        if any(b in str(error) for b in _BUSY):
            return True
        error = error.__cause__ or error.__context__
    return False


class _DropBusyTracebacks(logging.Filter):
    """MLflow logs each failed database call with its traceback (60 lines) before raising it;
    the lock errors `PatientClient` retries are not failures to show."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (error is not None and is_busy(error))


logging.getLogger("mlflow.store.db.utils").addFilter(_DropBusyTracebacks())


class PatientClient:
    """An `MlflowClient` whose calls wait out a store locked by another process (see the module
    doc); any other error is raised at once. `say` gets the one console line of a wait."""

    def __init__(self, client: Any, where: str, say: Callable[[str], None], wait_s: float = BUSY_WAIT_S) -> None:
        self._client, self._where, self._say, self._wait_s = client, where, say, wait_s
        self._lagging = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._patiently(attr, args, kwargs)

        return call

    def _patiently(self, method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        deadline, pause = time.monotonic() + self._wait_s, 0.5
        while True:
            try:
                result = method(*args, **kwargs)
            except Exception as e:
                if not is_busy(e) or time.monotonic() >= deadline:
                    raise
                if not self._lagging:
                    self._lagging = True
                    self._say(f"MLflow: {self._where} is locked by another process; its writes wait and retry "
                              f"(up to {self._wait_s:g} s each), training goes on")
                time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, 5.0)
                continue
            self._lagging = False
            return result


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
