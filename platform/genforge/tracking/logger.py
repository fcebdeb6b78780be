"""Rank-0 metric and artifact logging into an existing MLflow run: never a step twice, never lost to an outage.

Two rules, each for a reason:

- **A watermark per key.** MLflow never deduplicates by step: a step logged again after a restart adds a
  second row. The logger reads, per key, the highest step already in the run when it starts, and drops any
  row at or below it. A restart that replays the steps since its checkpoint therefore adds nothing for steps
  that were logged before the interruption, and fills in those that were not.
- **A buffer, written in the background, retried until it lands.** Training must neither wait for a slow
  tracking server nor lose rows when it is down or restarting. Rows are stamped when they are logged and
  queued; one daemon thread writes them in order with `log_batch` and, on any error (refused connection,
  timeout, 5xx), keeps the batch at the head of the queue and retries it with capped exponential backoff.
  A retry of a batch whose first attempt did reach the server adds nothing: MLflow's SQL store skips a row
  identical in key, timestamp, step and value to one it holds (`SqlAlchemyStore._log_metrics_once`), which
  is why a row's timestamp is fixed once, when it is queued.

`close()` (the end of training) waits for the queue to drain, up to a timeout, and warns with the count of
what could not be written.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mlflow import MlflowClient
from mlflow.entities import Metric

MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch request
BACKOFF_S = (0.5, 10.0)  # first and longest wait between retries


@dataclass
class _Item:
    metrics: list[Metric] | None = None
    artifact: tuple[Path, str | None] | None = None  # (private copy, artifact folder)


class RunLogger:
    def __init__(self, tracking_uri: str, run_id: str, say: Callable[[str], None] | None = None) -> None:
        """`say` gets the one-line notices (server failing, answering again, rows not written); default: warnings."""
        self.client, self.run_id, self.server = MlflowClient(tracking_uri), run_id, tracking_uri
        self._say = say or (lambda line: warnings.warn(line, stacklevel=3))
        self.watermarks = self._read_watermarks()
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._failing_since: float | None = None
        self._spool = Path(tempfile.mkdtemp(prefix="genforge-artifacts-"))  # copies of queued artifacts
        self._thread = threading.Thread(target=self._drain, name="genforge-mlflow-logger", daemon=True)
        self._thread.start()

    def _read_watermarks(self) -> dict[str, int]:
        run = self.client.get_run(self.run_id)
        marks = {}
        for key in run.data.metrics:
            history = self.client.get_metric_history(self.run_id, key)
            marks[key] = max((m.step for m in history), default=-1)
        return marks

    @property
    def pending(self) -> int:
        """Queued items (metric batches and artifacts) not yet written."""
        with self._cond:
            return len(self._queue)

    def log_metrics(self, metrics: dict[str, float], step: int) -> int:
        """Queue the rows above each key's watermark; returns how many. Never blocks on the server."""
        now = int(time.time() * 1000)
        rows = [Metric(k, float(v), now, step) for k, v in metrics.items() if step > self.watermarks.get(k, -1)]
        for row in rows:
            self.watermarks[row.key] = step
        if rows:
            self._put(_Item(metrics=rows))
        return len(rows)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Queue a copy of the file (callers delete theirs at once) for the artifact folder `artifact_path`."""
        folder = Path(tempfile.mkdtemp(dir=self._spool))
        copy = folder / Path(path).name
        shutil.copy2(path, copy)
        self._put(_Item(artifact=(copy, artifact_path)))

    def _put(self, item: _Item) -> None:
        with self._cond:
            self._queue.append(item)
            self._cond.notify_all()

    def flush(self, timeout_s: float = 300.0) -> bool:
        """Wait until everything queued is written; False if `timeout_s` passed first."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def close(self, timeout_s: float = 300.0) -> bool:
        """Flush, then stop the writer; warns with what was not written if the server stayed away."""
        done = self.flush(timeout_s)
        with self._cond:
            self._closed = True
            left = len(self._queue)
            self._cond.notify_all()
        if not done:
            self._say(
                f"{left} metric batches/artifacts could not be written to {self.server} within {timeout_s:g} s; "
                f"run {self.run_id} lacks them"
            )
        shutil.rmtree(self._spool, ignore_errors=True)
        return done

    def _drain(self) -> None:
        """The writer thread: the head of the queue is written, or retried until it is."""
        wait = BACKOFF_S[0]
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                item = self._next_batch()
            try:
                self._write(item)
            except Exception as exc:  # noqa: BLE001 - any failure of the server is retried, never raised
                self._on_failure(exc)
                time.sleep(wait)
                wait = min(wait * 2, BACKOFF_S[1])
                continue
            wait = BACKOFF_S[0]
            with self._cond:
                self._queue.popleft()
                self._cond.notify_all()
            self._on_success()

    def _next_batch(self) -> _Item:
        """Merge consecutive metric items at the head into one request of at most MAX_BATCH rows."""
        head = self._queue[0]
        if head.metrics is None:
            return head
        while len(self._queue) > 1 and self._queue[1].metrics is not None:
            if len(head.metrics) + len(self._queue[1].metrics) > MAX_BATCH:
                break
            head = _Item(metrics=head.metrics + self._queue[1].metrics)
            self._queue.popleft()
            self._queue[0] = head
        return head

    def _write(self, item: _Item) -> None:
        if item.metrics is not None:
            self.client.log_batch(self.run_id, metrics=item.metrics)
        else:
            path, folder = item.artifact
            self.client.log_artifact(self.run_id, str(path), folder)
            shutil.rmtree(path.parent, ignore_errors=True)

    def _on_failure(self, exc: Exception) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            first_line = (str(exc).strip().splitlines() or [""])[0][:200]
            self._say(
                f"tracking server {self.server} failed ({type(exc).__name__}: {first_line}); buffering metrics and "
                "retrying in the background"
            )

    def _on_success(self) -> None:
        if self._failing_since is not None:
            down = time.monotonic() - self._failing_since
            self._failing_since = None
            left = self.pending
            self._say(f"tracking server {self.server} answers again after {down:.0f} s; {left} buffered items left")
