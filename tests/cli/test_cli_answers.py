"""`fathom ask --schema` and citations, end to end against a scripted OpenAI server."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Runner, script
from tests.fake_servers import ScriptedOpenAIServer

ASK = ["--model", "openai:x", "--sandbox", "inprocess"]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
NOTES = "Notes.\nMarta moved to Lisbon in June.\n"


def repl(code: str) -> str:
    return f"```repl\n{code}\n```"


def test_schema_answers_are_printed_as_json_with_the_citations_under_them(
    fathom_cli: Runner, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text(NOTES)
    (tmp_path / "city.json").write_text(json.dumps(SCHEMA))
    root = [
        repl("FINAL({'town': 'Lisbon'})"),
        repl("i = context.find('Marta')\ncite(i, context.find('.', i) + 1)\n"
             "FINAL({'city': 'Lisbon'})"),
    ]
    with ScriptedOpenAIServer(script(root)) as server:
        out = fathom_cli("ask", "notes.txt", "-q", "Where?", "--schema", "city.json", *ASK,
                         base_url=server.base_url)
        refused = server.requests[1]["messages"][-1]["content"]
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"city": "Lisbon"}
    assert "'city' is a required property" in refused
    assert 'notes.txt:2  "Marta moved to Lisbon in June."' in out.stderr
    # The progress lines say so as it happens.
    assert "answer refused by the schema (1 error(s)): (the answer): 'city'" in out.stderr
    assert "cited context:2: Marta moved to Lisbon in June." in out.stderr


def test_json_output_carries_the_typed_answer_and_the_citations(
    fathom_cli: Runner, tmp_path: Path
) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text(NOTES)
    (tmp_path / "city.json").write_text(json.dumps(SCHEMA))
    root = [repl("cite(7, 12, 'a.md')\nFINAL({'city': 'Lisbon'})")]
    with ScriptedOpenAIServer(script(root)) as server:
        out = fathom_cli("ask", "docs", "-q", "Where?", "--schema", "city.json", "--json",
                         *ASK, base_url=server.base_url)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["answer"] == {"city": "Lisbon"}
    assert data["citations"] == [{"source": "a.md", "start": 7, "end": 12,
                                  "line_start": 2, "line_end": 2, "text": "Marta"}]


def test_an_answer_that_never_matches_fails_and_a_bad_schema_file_is_a_usage_error(
    fathom_cli: Runner, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text(NOTES)
    (tmp_path / "city.json").write_text(json.dumps(SCHEMA))
    (tmp_path / "bad.json").write_text("{not json")
    with ScriptedOpenAIServer(script(["FINAL(Lisbon)"] * 3)) as server:
        out = fathom_cli("ask", "notes.txt", "-q", "Where?", "--schema", "city.json",
                         "--max-iterations", "2", *ASK, base_url=server.base_url)
    assert out.returncode == 1 and out.stdout == ""
    assert "no answer matched --schema" in out.stderr
    bad = fathom_cli("ask", "notes.txt", "-q", "Where?", "--schema", "bad.json", *ASK)
    assert bad.returncode == 2 and "cannot read a JSON schema" in bad.stderr
