"""`bm25`: the chunks of the input that BM25 ranks highest for the query, then one read."""

from __future__ import annotations

from pathlib import Path

from fathom.bench.methods.base import (
    ANSWER_FORMAT,
    Limits,
    MeteredRun,
    Outcome,
    chunk_text,
    context_text,
    room_for,
)
from fathom.bench.tasks.base import Task
from fathom.errors import ProviderUnavailable
from fathom.lm.base import LM

# ~1,000 tokens a chunk and at most 20 of them: a retrieval read costs about what the
# paper's CodeAct+BM25 read does, whatever the model's window.
CHUNK_CHARS = 4_000
TOP_K = 20

PROMPT = """\
Passages retrieved from a long input by BM25 for the query, best first:

{passages}

Query: {query}
Answer from the passages. {answer_format}"""


def top_chunks(chunks: list[str], query: str, k: int) -> list[int]:
    """Indices of the `k` chunks BM25 ranks highest for `query`, best first."""
    try:
        import bm25s
    except ImportError as exc:
        raise ProviderUnavailable(
            "The bm25 method needs bm25s: pip install 'fathom[bench]'."
        ) from exc
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(chunks, stopwords="en", show_progress=False),
                    show_progress=False)
    k = min(k, len(chunks))
    ids, _ = retriever.retrieve(bm25s.tokenize([query], stopwords="en", show_progress=False),
                                k=k, show_progress=False)
    return [int(i) for i in ids[0]]


class BM25:
    """The paper's CodeAct+BM25, as one retrieval and one read."""

    name = "bm25"
    description = f"the top {TOP_K} chunks by BM25 (bm25s), then one read"

    async def run(self, task: Task, root: LM, sub: LM, limits: Limits, trace: Path) -> Outcome:
        """Retrieve, then answer from what was retrieved (as much as the window takes)."""
        chunks = chunk_text(context_text(task.context), CHUNK_CHARS)
        room = room_for(root, PROMPT.format(passages="", query=task.query,
                                            answer_format=ANSWER_FORMAT))
        chosen: list[str] = []
        for index in top_chunks(chunks, task.query, TOP_K):
            passage = f"[passage {len(chosen) + 1}, chunk {index}]\n{chunks[index]}"
            if sum(len(p) + 2 for p in chosen) + len(passage) > room:
                break
            chosen.append(passage)
        notes = {"chunks": len(chunks), "retrieved": len(chosen)}
        with MeteredRun(self.name, task, root, sub, limits, trace) as run:
            run.step()
            prompt = PROMPT.format(passages="\n\n".join(chosen), query=task.query,
                                   answer_format=ANSWER_FORMAT)
            return await run.conclude(run.ask(prompt), notes)
