"""Where rows run: threads of this process (`local`) or tasks on a Ray cluster (`ray`).

Both keep at most `concurrency` rows going and pull the next row only as one finishes,
so the runner can share the dollar budget among the rows it starts. A Ray worker
writes its trace to a file of its own and sends the bytes back; the driver writes
every trace under the output directory, wherever the row ran.
"""

from __future__ import annotations

import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, TypeVar

from fathom.bench.runner import Executor, RowSpec, run_row
from fathom.errors import ConfigError, FathomError

EXECUTORS = ("local", "ray")
RAY_HINT = "pip install 'fathom[ray]'"

H = TypeVar("H")


def bounded(rows: Iterator[RowSpec], concurrency: int, start: Callable[[RowSpec], H],
            finished: Callable[[list[H]], list[H]], result: Callable[[H], dict[str, Any]],
            ) -> Iterator[dict[str, Any]]:
    """Keep `concurrency` rows running; yield each result, then start the next row."""
    running: list[H] = []
    for spec in rows:
        running.append(start(spec))
        if len(running) < concurrency:
            continue
        while len(running) >= concurrency:
            for handle in finished(running):
                running.remove(handle)
                yield result(handle)
    while running:
        for handle in finished(running):
            running.remove(handle)
            yield result(handle)


class LocalExecutor(Executor):
    """Rows in threads of this process (each row runs its own event loop)."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._stop = threading.Event()

    def map(self, rows: Iterator[RowSpec], out_dir: Path, concurrency: int
            ) -> Iterator[dict[str, Any]]:
        """Rows' results in the order they finish."""
        self._stop = threading.Event()
        self._pool = pool = ThreadPoolExecutor(concurrency, thread_name_prefix="fathom-bench")

        def finished(running: list[Future[dict[str, Any]]]) -> list[Future[dict[str, Any]]]:
            return list(wait(running, return_when=FIRST_COMPLETED).done)

        yield from bounded(rows, concurrency,
                           lambda spec: pool.submit(run_row, spec, out_dir / spec.trace,
                                                    self._stop),
                           finished, lambda future: future.result())

    def close(self) -> None:
        """Drop rows not started and cancel the running ones (Ctrl-C, a failed row)."""
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _ray_row(spec: RowSpec) -> tuple[dict[str, Any], bytes]:
    """A row on a Ray worker: the row, and its trace compressed."""
    with tempfile.TemporaryDirectory(prefix="fathom-bench-") as scratch:
        trace = Path(scratch) / "trace.jsonl"
        row = run_row(spec, trace)
        data = trace.read_bytes() if trace.exists() else b""
    return row, zlib.compress(data)


class RayExecutor(Executor):
    """Rows as Ray tasks: on a cluster at `address`, else on one started here.

    Ray is joined (or started) with the first row, so a run with nothing left to do
    never waits for it.
    """

    def __init__(self, address: str | None = None, **init_options: Any) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError(f"--executor ray needs Ray: {RAY_HINT}.") from exc
        self._ray = ray
        self._address = address
        self._options = init_options
        self._started = False
        self._remote: Any = None
        self._running: list[Any] = []

    def _connect(self) -> Any:
        """The remote row function, on a Ray joined or started now if need be."""
        ray = self._ray
        if not ray.is_initialized():
            options = {"include_dashboard": False, "logging_level": "WARNING", **self._options}
            if self._address is not None:
                options["address"] = self._address
            try:
                ray.init(**options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self._address or "a local cluster"
                raise ConfigError(f"Ray could not start or reach {where}: {exc}") from exc
            self._started = True
        if self._remote is None:
            self._remote = ray.remote(_ray_row)
        return self._remote

    def map(self, rows: Iterator[RowSpec], out_dir: Path, concurrency: int
            ) -> Iterator[dict[str, Any]]:
        """Rows' results in the order they finish; traces written under `out_dir`."""
        ray = self._ray
        self._running = running = []

        def start(spec: RowSpec) -> Any:
            ref = self._connect().remote(spec)
            running.append(ref)
            return ref

        def finished(pending: list[Any]) -> list[Any]:
            done, _ = ray.wait(pending, num_returns=1)
            return list(done)

        def result(ref: Any) -> dict[str, Any]:
            running.remove(ref)
            try:
                row, trace = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                # An error for the user to fix, raised on a worker: say it as fathom says it
                # locally, without Ray's traceback around it.
                if isinstance(exc.cause, FathomError):
                    raise exc.cause from None
                raise
            path = out_dir / row["trace"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(zlib.decompress(trace))
            return row

        yield from bounded(rows, concurrency, start, finished, result)

    def close(self) -> None:
        """Cancel rows still running, and stop Ray if this executor started it."""
        for ref in self._running:
            self._ray.cancel(ref, force=True)
        self._running = []
        if self._started:
            self._ray.shutdown()
            self._started = False


def create(name: str, *, ray_address: str | None = None) -> Executor:
    """The executor called `name` ("local" or "ray")."""
    if name == "local":
        if ray_address is not None:
            raise ConfigError("--ray-address needs --executor ray.")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(ray_address)
    raise ConfigError(f"unknown executor {name!r}: choose from {', '.join(EXECUTORS)}")
