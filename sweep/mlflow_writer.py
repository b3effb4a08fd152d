"""A sweep's MLflow writes, made off the Tune loop by one thread, in the order they were asked for.

Ray Tune calls the sweep's callback (`sweep.tune_callback.TrackingCallback`) from its event loop and
starts no trial while a callback runs. Each MLflow write is a database commit (or an HTTP request
to a server, or a file copy for an artifact): done in the callback, a sweep of short trials spent
most of its overhead over bare Tune waiting on them (`benchmarks/bench_sweep_scale.py`). The
callback therefore records an event in the trial store -- the record, written before anything
else -- and hands the MLflow side to this writer.

One thread, first in first out: a trial's run is created before its metrics are logged and ended
after them, with no locking in the jobs. A job that fails stops the writer: the jobs after it are
dropped (they may log into a run that was never made) and the failure is raised in the driver at
its next `check` or `flush`, as if the callback had raised it. What was dropped, or lost with a
killed driver, is rebuilt from the store by `sweep.trial_runs.sync_runs` at `--resume`.

A busy store is not a failed job, and never stops training. Another process holding a sqlite
store's lock (a person's `mlflow ui` query, a backup, a second sweep's long write) made MLflow fail
a write after about 20 s, which stopped the sweep (exit 3) and killed its running trials --
although MLflow is only a view, rebuilt from the trial store by `--sync`. `PatientClient` retries
each call that failed on a lock (a call is one database transaction, rolled back when it hit the
lock, so a retry writes nothing twice). On the writer's thread it waits as long as the lock is
held: the jobs behind it wait in order, the trials and the store go on, the driver's `flush` no
longer waits for a lagging writer, and one console line says so ("MLflow is busy: N updates
waiting; ..."). At the sweep's end the driver gives MLflow `CATCH_UP_S` to catch up, then says to
run `--sync` and ends normally; `close` drops what is still waiting. A call the driver makes
itself (the parent's results at the end) waits at most `BUSY_WAIT_S`.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Optional

Job = Callable[[], None]
BUSY_WAIT_S = 600.0  # how long an MLflow call made on the driver's own thread waits out a locked store
CATCH_UP_S = 120.0  # at a sweep's end: how long a lagging writer is given before the user is told to --sync
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
    doc); any other error is raised at once. `say` gets the one console line of a wait made on the
    driver's thread; on the writer's thread the writer says it (`MlflowWriter.lagging`)."""

    def __init__(self, client: Any, where: str, say: Callable[[str], None], wait_s: Optional[float] = None) -> None:
        self._client, self._where, self._say = client, where, say
        self._wait_s = BUSY_WAIT_S if wait_s is None else wait_s  # read at call time: tests shorten it
        self._lagging = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._patiently(attr, args, kwargs)

        return call

    def _patiently(self, method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        writer: Optional[MlflowWriter] = getattr(_thread, "writer", None)
        deadline, pause = time.monotonic() + self._wait_s, 0.5
        while True:
            try:
                result = method(*args, **kwargs)
            except Exception as e:
                if not is_busy(e) or (writer is None and time.monotonic() >= deadline) or (writer and writer.gives_up()):
                    raise
                if writer is not None:
                    writer.lagging()
                elif not self._lagging:
                    self._lagging = True
                    self._say(f"MLflow: {self._where} is locked by another process; its writes wait and retry "
                              f"(up to {self._wait_s:g} s each), training goes on")
                time.sleep(pause if writer else min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, 5.0)
                continue
            self._lagging = False
            if writer is not None:
                writer.caught_up()
            return result


_thread = threading.local()  # `writer`: set on a writer's own thread


class MlflowWriter:
    def __init__(self, say: Optional[Callable[[str], None]] = None) -> None:
        self._jobs: queue.SimpleQueue[Optional[Job]] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._pending = 0
        self._lagging = False  # a job waits on a store locked by someone else
        self._give_up_at: Optional[float] = None  # set by `close`: a lagging job gives up then
        self._say = say
        self.dropped = 0  # jobs not made: after a failed one, or given up on a busy store at `close`
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

    @property
    def is_lagging(self) -> bool:
        return self._lagging

    def flush(self, check: bool = True) -> None:
        """Wait until every job submitted so far is done, or the writer lags behind a busy store
        (its jobs wait; the store has what they write); then `check` (unless told not to)."""
        with self._idle:
            self._idle.wait_for(lambda: self._pending == 0 or self._lagging)
        if check:
            self.check()

    def catch_up(self, seconds: float) -> bool:
        """Wait up to `seconds` for every job submitted so far; True if they are all done."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout=seconds)

    def close(self) -> None:
        """Finish the jobs submitted so far, then stop the thread (failures are not raised); a job
        waiting on a busy store gives up after `CATCH_UP_S` more, and the rest are dropped."""
        if self._thread.is_alive():
            self._give_up_at = time.monotonic() + CATCH_UP_S
            self._jobs.put(None)
            self._thread.join()

    # ---------------------------------------------------------------- the writer's thread (PatientClient)

    def lagging(self) -> None:
        with self._idle:
            if self._lagging:
                return
            self._lagging, waiting = True, self._pending
            self._idle.notify_all()
        say = self._say
        if say is None:
            from sweep.console import say
        say(f"MLflow is busy: {waiting} update{'s' * (waiting != 1)} waiting; the trial store has them, --sync replays")

    def caught_up(self) -> None:
        if self._lagging:
            with self._idle:
                self._lagging = False

    def gives_up(self) -> bool:
        return self._give_up_at is not None and time.monotonic() >= self._give_up_at

    def _work(self) -> None:
        _thread.writer = self
        failed = False
        while (job := self._jobs.get()) is not None:
            try:
                if not failed:
                    job()
                else:
                    self.dropped += 1
            except BaseException as e:  # noqa: BLE001 -- raised in the driver's thread by `check`
                failed, self.dropped = True, self.dropped + 1
                if not (self.gives_up() and is_busy(e)):  # given up at close: dropped, not an error
                    self._error = e
            finally:
                with self._idle:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.notify_all()
