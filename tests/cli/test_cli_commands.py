"""The other commands: --version, --help, view, replay, doctor, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import fathom
from tests.cli.conftest import Runner


def test_version(fathom_cli: Runner) -> None:
    out = fathom_cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"fathom {fathom.__version__}"


def test_help_lists_commands_and_ask_help_has_worked_examples(fathom_cli: Runner) -> None:
    top = fathom_cli("--help")
    assert top.returncode == 0
    for name in ("ask", "demo", "view", "replay", "doctor"):
        assert name in top.stdout
    ask = fathom_cli("ask", "--help")
    assert ask.returncode == 0
    assert 'fathom ask novel.txt -q "Which city did Marta move to?"' in ask.stdout
    assert "cat report.md | fathom ask - -q" in ask.stdout
    assert "Exit codes:" in ask.stdout and "4    no FINAL within --max-iterations" in ask.stdout


def test_view_of_missing_or_malformed_trace_exits_2(fathom_cli: Runner, tmp_path: Path) -> None:
    missing = fathom_cli("view", "nope.jsonl")
    assert missing.returncode == 2 and "nope.jsonl" in missing.stderr
    (tmp_path / "bad.jsonl").write_text('{"type": "run_start"}\nnot json\n{"v": 1}\n')
    bad = fathom_cli("view", "bad.jsonl")
    assert bad.returncode == 2 and "bad.jsonl:1" in bad.stderr
    first = '{"type": "run_start", "run_id": "r", "depth": 0, "t": 0}'
    (tmp_path / "bad2.jsonl").write_text(first + "\nnot json\n{}\n")
    bad2 = fathom_cli("view", "bad2.jsonl")  # bad lines are skipped, and told
    assert bad2.returncode == 0 and "bad2.jsonl:2" in bad2.stderr


def test_replay_of_non_trace_exits_2(fathom_cli: Runner, tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    out = fathom_cli("replay", "empty.jsonl")
    assert out.returncode == 2 and "no run_start" in out.stderr


def test_replay_json_report(fathom_cli: Runner, tmp_path: Path) -> None:
    from tests.viewer.recorded_runs import depth2_run

    depth2_run(tmp_path / "d2.jsonl")
    out = fathom_cli("replay", "d2.jsonl", "--sandbox", "inprocess", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["matches"] is True and report["replayed_answer"] == "Lisbon"


def test_doctor_reports_environment_and_isolation_layers(fathom_cli: Runner) -> None:
    out = fathom_cli("doctor")
    assert out.returncode == 0, out.stderr
    assert "python" in out.stdout and "providers" in out.stdout
    assert "sandbox protection layers" in out.stdout
    assert "\n  environment " in out.stdout and "  memory_limit " in out.stdout
    assert "OPENAI_API_KEY" in out.stdout and "sk-" not in out.stdout  # presence, never values


def test_doctor_names_the_isolation_levels(fathom_cli: Runner) -> None:
    out = fathom_cli("doctor", "--isolation", "paranoid")
    assert out.returncode == 2
    assert "'strict', 'standard', 'off'" in out.stderr


def test_view_open_hands_the_page_to_the_browser(fathom_cli: Runner, tmp_path: Path) -> None:
    from tests.cli.conftest import cli_env
    from tests.viewer.recorded_runs import depth2_run

    depth2_run(tmp_path / "d2.jsonl")
    # webbrowser honours $BROWSER: a command that records the URL it is given.
    env = cli_env(BROWSER="sh -c 'echo \"$0\" > opened.txt' %s")
    out = fathom_cli("view", "d2.jsonl", "--open", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "d2.html"
    assert (tmp_path / "opened.txt").read_text().strip() == (tmp_path / "d2.html").as_uri()
