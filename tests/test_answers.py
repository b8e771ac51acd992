"""Typed answers: `schema=` shows the model a schema, refuses answers that do not match it
(telling the model why) and returns the validated value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

import fathom
from fathom.answers import AnswerSchema, parse_answer, refusal
from fathom.lm import ScriptedLM
from fathom.lm.base import Message
from fathom.trace import AnswerRefused, RunStart, read


class Move(BaseModel):
    person: str
    city: str
    year: int


MOVE_SCHEMA = {
    "type": "object", "title": "Move",
    "properties": {"person": {"type": "string"}, "year": {"type": "integer"}},
    "required": ["person", "year"],
}
CONTEXT = "Marta moved to Lisbon in 2019.\nJoão stayed in Porto."


def repl(code: str) -> str:
    return f"```repl\n{code}\n```"


def user_turns(messages: list[Message]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "user"]


# --- the schema on its own ----------------------------------------------------------------
def test_a_pydantic_model_validates_json_text_and_python_literals() -> None:
    schema = AnswerSchema(Move)
    good = schema.check('{"person": "Marta", "city": "Lisbon", "year": 2019}')
    assert good.ok and good.value == Move(person="Marta", city="Lisbon", year=2019)
    assert schema.check("{'person': 'Marta', 'city': 'Lisbon', 'year': '2019'}").ok
    bad = schema.check('{"person": "Marta", "year": "soon"}')
    assert not bad.ok
    assert "city: Field required" in bad.errors
    assert any(e.startswith("year: ") for e in bad.errors)
    assert schema.json_schema["required"] == ["person", "city", "year"]
    assert schema.dumps(good.value) == '{"person":"Marta","city":"Lisbon","year":2019}'


def test_a_json_schema_dict_validates_with_paths_in_its_errors() -> None:
    schema = AnswerSchema(MOVE_SCHEMA)
    assert schema.check('{"person": "Marta", "year": 2019}').value == {
        "person": "Marta", "year": 2019}
    bad = schema.check('{"person": 7}')
    assert set(bad.errors) == {"person: 7 is not of type 'string'",
                               "(the answer): 'year' is a required property"}


def test_plain_text_is_tried_as_itself_for_a_string_schema() -> None:
    assert AnswerSchema({"type": "string"}).check("42").value == "42"
    assert AnswerSchema(int).check("42").value == 42
    assert parse_answer("Lisbon") == "Lisbon"
    assert parse_answer(" [1, 2] ") == [1, 2]


def test_a_bad_schema_is_a_config_error() -> None:
    with pytest.raises(fathom.ConfigError, match="not a valid JSON schema"):
        AnswerSchema({"type": "no-such-type"})
    with pytest.raises(fathom.ConfigError, match="pydantic model class or a JSON-schema dict"):
        AnswerSchema(object())


def test_the_refusal_lists_the_errors_and_says_how_to_answer() -> None:
    text = refusal(AnswerSchema(Move), ("city: Field required",) * 25)
    assert "does not match Move" in text and text.count("city: Field required") == 20
    assert "and 5 more errors" in text and 'FINAL_VAR("name")' in text


# --- runs through the subprocess sandbox ----------------------------------------------------
@pytest.mark.slow
def test_an_invalid_answer_is_refused_with_its_errors_then_a_fixed_one_accepted(
    tmp_path: Path,
) -> None:
    root = ScriptedLM([
        repl("move = {'person': 'Marta', 'year': 'twenty nineteen'}\nFINAL_VAR('move')"),
        repl("move['year'] = 2019\nmove['city'] = 'Lisbon'\nFINAL_VAR('move')"),
    ])
    trace = tmp_path / "run.jsonl"
    result = fathom.RLM(root, trace=trace).run("Where did Marta move?", CONTEXT, schema=Move)
    assert result.stop_reason == "final" and result.iterations == 2
    assert result.answer == Move(person="Marta", city="Lisbon", year=2019)
    first, second = user_turns(root.calls[0]), user_turns(root.calls[1])
    assert '"required": [' in first[0] and "Move" in first[0]  # the schema was shown
    told = second[-1]
    assert "refused" in told and "city: Field required" in told and "year: " in told
    assert result.to_dict()["answer"] == {"person": "Marta", "city": "Lisbon", "year": 2019}
    events = read(trace)
    start = next(e for e in events if isinstance(e, RunStart))
    assert start.schema == Move.model_json_schema()
    refused = [e for e in events if isinstance(e, AnswerRefused)]
    assert len(refused) == 1 and "city: Field required" in refused[0].errors


@pytest.mark.slow
def test_a_json_schema_answer_given_as_text_comes_back_as_a_dict() -> None:
    root = ScriptedLM([
        'FINAL({"person": "Marta"})',
        'FINAL({"person": "Marta", "year": 2019})',
    ])
    result = fathom.RLM(root).run("Who moved, and when?", CONTEXT, schema=MOVE_SCHEMA)
    assert result.stop_reason == "final"
    assert result.answer == {"person": "Marta", "year": 2019}
    assert "'year' is a required property" in user_turns(root.calls[1])[-1]


def test_a_refused_final_in_the_last_chance_turn_stays_the_candidate() -> None:
    root = ScriptedLM([
        repl("FINAL({'person': 'Marta'})"),
        "Here it is.\n" + repl("FINAL({'person': 'Marta', 'year': 'soon'})"),
    ])
    result = fathom.RLM(root, sandbox="inprocess", max_iterations=1).run(
        "When?", CONTEXT, schema=MOVE_SCHEMA)
    assert result.stop_reason == "invalid_answer"
    assert json.loads(result.answer) == {"person": "Marta", "year": "soon"}


@pytest.mark.slow
def test_invalid_answer_when_no_answer_ever_matches_keeps_the_last_candidate() -> None:
    root = ScriptedLM([
        repl("FINAL({'person': 'Marta'})"),
        repl("FINAL({'person': 'Marta', 'year': 'later'})"),
        'FINAL({"person": "Marta", "year": "never"})',  # the last-chance turn
    ])
    result = fathom.RLM(root, max_iterations=2).run("When?", CONTEXT, schema=MOVE_SCHEMA)
    assert result.stop_reason == "invalid_answer"
    assert json.loads(result.answer) == {"person": "Marta", "year": "never"}
    assert result.answer_source == "final"
    assert result.to_dict()["stop_reason"] == "invalid_answer"


def test_without_a_schema_a_dict_answer_is_json_text() -> None:
    root = ScriptedLM([repl("FINAL({'a': [1, 2], 'b': None})")])
    result = fathom.RLM(root, sandbox="inprocess").run("q", CONTEXT)
    assert result.answer == '{"a": [1, 2], "b": null}'


@pytest.mark.slow
def test_a_session_question_takes_a_schema_too() -> None:
    root = ScriptedLM([
        repl("FINAL('not json')"),
        repl("FINAL({'person': 'Marta', 'city': 'Lisbon', 'year': 2019})"),
    ])
    with fathom.RLM(root).session(CONTEXT) as session:
        result = session.ask("Where did Marta move?", schema=Move)
    assert result.answer == Move(person="Marta", city="Lisbon", year=2019)
    assert "refused" in user_turns(root.calls[1])[-1]


@pytest.mark.slow
def test_a_typed_run_replays_with_its_recorded_schema(tmp_path: Path) -> None:
    from fathom.replay import replay

    root = ScriptedLM([
        repl("FINAL({'person': 'Marta', 'year': 'soon'})"),
        repl("FINAL({'year': 2019, 'city': 'Lisbon', 'person': 'Marta'})"),
    ])
    trace = tmp_path / "run.jsonl"
    fathom.RLM(root, trace=trace).run("Where did Marta move?", CONTEXT, schema=Move)
    report = replay(trace)
    assert report.matches, report
    assert json.loads(report.replayed_answer) == {"person": "Marta", "city": "Lisbon",
                                                  "year": 2019}
