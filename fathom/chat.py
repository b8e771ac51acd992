"""`fathom chat`: questions about one loaded input, asked in a loop at a prompt.

The input is loaded and the sandbox started once (a `fathom.Session`); each question
runs in the same REPL, with the live progress of `fathom ask`. Ctrl-C cancels the
question being answered (the block running in the sandbox is interrupted) and returns
to the prompt; Ctrl-D leaves. With a save file the session is written after every
answer, so a later `--resume` finds it even after a crash.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import TextIO

from fathom.errors import FathomError
from fathom.progress import Mode, Progress
from fathom.result import Result
from fathom.session import Session
from fathom.terminal import is_terminal, safe_text

PROMPT = "fathom> "

Reader = Callable[[str], str]


class Chat:
    """The prompt loop over one session; `run` returns when the user leaves."""

    def __init__(
        self, session: Session, *, save: Path | None = None, progress: Mode = "auto",
        read: Reader = input, out: TextIO | None = None, err: TextIO | None = None,
        prompt: str | None = None,
    ) -> None:
        self.session = session
        # Questions piped in get no prompt, so stdout holds only the answers.
        self.prompt = prompt if prompt is not None else (
            PROMPT if is_terminal(sys.stdin) else "")
        self.save_path = save
        self.progress_mode = progress
        self.read = read
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr

    def run(self) -> None:
        """Ask what the user types until Ctrl-D (end of input)."""
        _remember(q["question"] for q in self.session.history)
        if self.session.history:
            self._tell(f"resumed a session of {len(self.session.history)} question(s); "
                       "`history` holds them")
        self._tell("ask a question about the input; Ctrl-C cancels an answer, Ctrl-D leaves")
        while True:
            try:
                line = self.read(self.prompt)
            except EOFError:
                self.out.write("\n")
                self._tell(self.totals())
                return
            except KeyboardInterrupt:  # at the prompt, as in Python's REPL: a fresh line
                self.out.write("\n")
                continue
            if line.strip():
                self.ask(line.strip())

    def ask(self, question: str) -> Result | None:
        """One question with live progress; None when it was cancelled or failed."""
        progress = Progress(self.progress_mode, stream=self.err)
        rlm = self.session.rlm
        previous, rlm.on_event = rlm.on_event, progress
        try:
            with progress.running():
                result = self.session.ask(question)
        except KeyboardInterrupt:
            self._say("question cancelled; the session goes on")
            return None
        except FathomError as exc:
            self._say(f"error: {exc}")
            return None
        finally:
            rlm.on_event = previous
        progress.summary(result)
        if result.error:
            self._say(f"error: {result.error}")
        answer = result.answer if isinstance(result.answer, str) else repr(result.answer)
        self.out.write((safe_text(answer) if is_terminal(self.out) else answer) + "\n")
        self.out.flush()
        if self.save_path is not None:
            self.save()
        return result

    def totals(self) -> str:
        """The session's questions and what they cost, summed."""
        usage = self.session.total_usage
        return (f"{len(self.session.results)} question(s) answered in this chat: "
                f"{usage.calls} model calls, {usage.total_tokens:,} tokens, ${usage.usd:.4f}")

    def save(self) -> None:
        """Write the session to the save file, saying what could not be saved."""
        if self.save_path is None:
            return
        try:
            report = self.session.save(self.save_path)
        except (FathomError, OSError) as exc:
            self._say(f"error: could not save the session to {self.save_path}: {exc}")
            return
        if report.unsaved:
            self._say(f"not saved (cannot be pickled): {', '.join(sorted(report.unsaved))}")

    def _tell(self, text: str) -> None:
        """Guidance, which --quiet leaves out (errors and cancellations are always said)."""
        if self.progress_mode != "quiet":
            self._say(text)

    def _say(self, text: str) -> None:
        self.err.write(f"fathom: {safe_text(text)}\n")
        self.err.flush()


def _remember(questions: Iterable[str]) -> None:
    """Earlier questions into readline's history (arrow-up), where readline exists."""
    try:
        import readline
    except ImportError:  # Windows without pyreadline: input() still works
        return
    for question in questions:
        readline.add_history(question)


def enable_line_editing() -> None:
    """Importing readline gives input() editing and a history of this chat's questions."""
    with contextlib.suppress(ImportError):  # Windows without pyreadline: plain input()
        import readline  # noqa: F401


def leave_on_signals() -> None:
    """SIGTERM and SIGHUP end the chat (not only the question, as Ctrl-C does); the
    session closes on the way out, so no sandbox worker is left behind."""

    def leave(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, leave)
