"""An opt-in SQLite cache of model replies, so a re-run of a deterministic run is free.

`ResponseCache(path)` stores replies keyed on a hash of the model name, the
messages and the sampling options. It uses stdlib `sqlite3` in WAL mode with a
busy timeout and one connection per thread, so concurrent sub-calls and
several processes can share one file. `CachedLM(lm, cache)` wraps any LM: a hit
returns the stored text with `cached=True` and `usd=0`, without calling the model.
Concurrent identical calls in one process wait for the first instead of all
calling the model.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from fathom.errors import ConfigError
from fathom.lm.base import LM, BaseLM, Completion, Message, Usage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created REAL NOT NULL
)
"""


def cache_key(model: str, messages: list[Message], options: dict[str, Any]) -> str:
    """SHA-256 of the model, messages and sampling options, in a canonical JSON form."""
    payload = {"model": model, "messages": messages, "options": options}
    data = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


class ResponseCache:
    """Model replies stored in one SQLite file, shared by threads and processes."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path).expanduser()
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as conn:
                conn.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"Cannot use {self.path} as a response cache ({exc}); "
                "pass a writable file path as cache=."
            ) from exc

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        # sqlite3 connections must not be shared across threads: one per thread.
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def get(self, key: str) -> tuple[str, int, int] | None:
        """(text, prompt_tokens, completion_tokens) stored under `key`, or None."""
        row = (
            self._connect()
            .execute(
                "SELECT text, prompt_tokens, completion_tokens FROM responses WHERE key = ?",
                (key,),
            )
            .fetchone()
        )
        return None if row is None else (str(row[0]), int(row[1]), int(row[2]))

    def put(self, key: str, model: str, completion: Completion) -> None:
        """Store a reply under `key` (a later identical reply replaces it)."""
        conn = self._connect()
        with conn:
            conn.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)",
                (
                    key,
                    model,
                    completion.text,
                    completion.usage.prompt_tokens,
                    completion.usage.completion_tokens,
                    time.time(),
                ),
            )

    def __len__(self) -> int:
        return int(self._connect().execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        """Close every connection this cache opened."""
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()


class CachedLM(BaseLM):
    """An LM that answers from a ResponseCache when it can and fills it when it cannot."""

    def __init__(self, lm: LM, cache: ResponseCache) -> None:
        self.lm = lm
        self.cache = cache
        self.name = lm.name
        self.context_window = lm.context_window
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        # key -> done when the one call in flight for it ends. A concurrent.futures
        # Future, because waiters may run on other threads' event loops.
        self._in_flight: dict[str, Future[None]] = {}

    def __repr__(self) -> str:
        return f"CachedLM({self.lm!r}, {self.cache!r})"

    async def acomplete(self, messages: list[Message], **options: Any) -> Completion:
        """The cached reply, or the model's (then stored).

        Identical concurrent calls, from any thread or event loop, wait for the first
        one's reply instead of all calling the model.
        """
        start = time.perf_counter()
        key = cache_key(self.name, messages, options)
        hit = await asyncio.to_thread(self._hit, key, start)
        if hit is not None:
            return hit
        while (flight := self._take_turn(key)) is not None:
            # Shielded: a cancelled waiter must not cancel the flight others wait on.
            await asyncio.shield(asyncio.wrap_future(flight))
        try:
            hit = await asyncio.to_thread(self._hit, key, start)  # filled while we waited?
            if hit is not None:
                return hit
            completion = await self.lm.acomplete(messages, **options)
            await asyncio.to_thread(self.cache.put, key, self.name, completion)
            with self._lock:
                self.misses += 1
            return completion
        finally:
            self._land(key)

    def _hit(self, key: str, start: float) -> Completion | None:
        found = self.cache.get(key)
        if found is None:
            return None
        text, prompt_tokens, completion_tokens = found
        with self._lock:
            self.hits += 1
        # Tokens are those of the original call; nothing was paid for this one.
        usage = Usage(prompt_tokens, completion_tokens, 0, 0.0, 1)
        seconds = time.perf_counter() - start
        return Completion(text, self.name, usage, cached=True, seconds=seconds)

    def _take_turn(self, key: str) -> Future[None] | None:
        """None when this call may go to the model, else the flight to wait for first."""
        with self._lock:
            flight = self._in_flight.get(key)
            if flight is None:
                self._in_flight[key] = Future()
            return flight

    def _land(self, key: str) -> None:
        with self._lock:
            self._in_flight.pop(key).set_result(None)
