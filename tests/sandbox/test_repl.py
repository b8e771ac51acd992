"""The REPL semantics both sandboxes share (fathom.sandbox.repl), tested directly."""

from __future__ import annotations

import threading

from fathom.sandbox.output import CappedText
from fathom.sandbox.repl import Repl


def make(bridge, context="some context text", limit=1_000_000):
    return Repl(context, bridge, output_limit=limit)


def test_last_expression_is_echoed_but_none_is_not(bridge):
    repl = make(bridge)
    assert repl.execute("x = 40\nx + 2").stdout == "42\n"
    assert repl.execute("'text'").stdout == "'text'\n"
    assert repl.execute("None").stdout == ""
    assert repl.execute("print('hi')").stdout == "hi\n"  # print returns None: no echo


def test_state_persists_and_context_is_there(bridge):
    repl = make(bridge, context=["a", "b"])
    repl.execute("n = len(context)")
    assert repl.execute("n * 10").stdout == "20\n"


def test_stdout_and_stderr_are_captured_including_threads(bridge):
    repl = make(bridge)
    code = (
        "import sys, threading\n"
        "print('main')\n"
        "print('err', file=sys.stderr)\n"
        "sys.stdout.write('raw\\n')\n"
        "t = threading.Thread(target=lambda: print('from thread'))\n"
        "t.start(); t.join()\n"
    )
    result = repl.execute(code)
    assert result.stdout == "main\nraw\nfrom thread\n"
    assert result.stderr == "err\n"
    assert result.error is None


def test_other_threads_output_is_not_captured(bridge, capsys):
    repl = make(bridge)
    release = threading.Event()

    def outsider() -> None:
        release.wait()
        print("outsider")

    t = threading.Thread(target=outsider)
    t.start()
    result = repl.execute("import time\nprint('inside')\n")
    release.set()
    t.join()
    assert "outsider" not in result.stdout
    assert "outsider" in capsys.readouterr().out


def test_final_sets_answer_and_stops_the_block(bridge):
    repl = make(bridge)
    result = repl.execute("FINAL(6 * 7)\nprint('not reached')")
    assert result.final == "42"
    assert result.stdout == ""
    assert result.error is None
    assert repl.execute("x = 1").final is None  # reset per block


def test_final_is_not_swallowed_by_except_exception(bridge):
    result = make(bridge).execute("try:\n    FINAL('done')\nexcept Exception:\n    pass\nx = 2")
    assert result.final == "done"
    assert result.error is None


def test_final_from_a_thread_sets_the_answer_quietly(bridge):
    code = (
        "import threading\n"
        "t = threading.Thread(target=lambda: FINAL('late'))\nt.start(); t.join()"
    )
    result = make(bridge).execute(code)
    assert result.final == "late"
    assert result.stderr == "" and result.error is None


def test_final_var_by_name_and_by_value(bridge):
    repl = make(bridge)
    repl.execute("answer = {'city': 'Lisbon'}")
    # A dict crosses as JSON text, so a typed answer (schema=) can be validated in the parent.
    assert repl.execute("FINAL_VAR('answer')").final == '{"city": "Lisbon"}'
    assert repl.execute("FINAL_VAR(answer)").final == '{"city": "Lisbon"}'  # value, not a str
    assert repl.execute('FINAL_VAR("\'answer\'")').final == '{"city": "Lisbon"}'
    repl.execute("odd = {'ids': {1, 2}}")  # not JSON: its str() as before
    assert repl.execute("FINAL_VAR('odd')").final == "{'ids': {1, 2}}"


def test_final_var_missing_name_reports_and_keeps_running(bridge):
    repl = make(bridge)
    result = repl.execute("FINAL_VAR('nothing')\nafter = 1\nprint('still here')")
    assert result.final is None
    assert result.error is not None
    assert result.error.startswith("FINAL_VAR: no variable named 'nothing'")
    assert result.stdout == "still here\n"
    assert repl.execute("after").stdout == "1\n"


def test_show_vars_lists_user_variables_only(bridge):
    repl = make(bridge, context="abc")
    repl.execute("import json\nitems = [1, 2, 3]\ndef helper():\n    return 1\n")
    out = repl.execute("SHOW_VARS()").stdout
    assert "items: list, 3 items" in out
    assert "context: str, 3 chars" in out
    assert "helper: function" in out
    assert "llm_query" not in out and "FINAL" not in out
    assert repl.variables()["json"] == "module"


def test_traceback_shows_only_repl_frames_with_their_own_lines(bridge):
    repl = make(bridge)
    repl.execute("def divide(a):\n    return 1 / a\n")
    error = repl.execute("x = 1\ndivide(0)").error
    assert error is not None
    assert 'File "<repl>", line 2, in <module>' in error
    assert "divide(0)" in error
    assert 'File "<repl>", line 2, in divide' in error
    assert "return 1 / a" in error  # the line from the earlier block
    assert error.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "fathom" not in error and "repl.py" not in error


def test_library_frames_are_hidden_chained_exceptions_kept(bridge):
    error = make(bridge).execute(
        "import json\ntry:\n    json.loads('{')\nexcept ValueError as e:\n"
        "    raise KeyError('k') from e\n"
    ).error
    assert error is not None
    assert "json/decoder.py" not in error
    assert "JSONDecodeError" in error and "direct cause" in error and "KeyError: 'k'" in error


def test_syntax_error_and_system_exit_are_reported(bridge):
    repl = make(bridge)
    syntax = repl.execute("def broken(:\n    pass")
    assert syntax.error is not None and "SyntaxError" in syntax.error
    assert "<repl>" in syntax.error
    leave = repl.execute("import sys\nsys.exit(3)")
    assert leave.error is not None and "SystemExit: 3" in leave.error
    assert repl.execute("1 + 1").stdout == "2\n"


def test_model_functions_call_the_bridge(bridge):
    repl = make(bridge)
    out = repl.execute(
        "a = llm_query('q1', model='m')\n"
        "b = llm_query_batched(['x', 'y'])\n"
        "c = rlm_query('sub', context=[1, 2])\n"
        "d = rlm_query_batched(['p'], contexts=['c'])\n"
        "print(a); print(b); print(c); print(d)"
    ).stdout
    assert out.splitlines() == [
        "answer to q1",
        "['answer to x', 'answer to y']",
        "answer to rlm sub ctx=[1, 2]",
        "['rlm p']",
    ]
    assert ("llm_query", ("q1", "m")) in bridge.calls
    assert ("llm_query_batched", (["x", "y"], None)) in bridge.calls
    assert ("rlm_query_batched", (["p"], ["c"])) in bridge.calls


def test_budget_stop_reply_raises_budget_exceeded_in_user_code(make_bridge, refusing):
    bridge = make_bridge(reply=refusing("Budget reached: calls limit of 3"))
    result = make(bridge).execute("n = 0\nwhile True:\n    llm_query('again')\n    n += 1")
    assert result.error is not None
    assert "BudgetExceeded" in result.error and "calls limit of 3" in result.error


def test_budget_stop_in_a_batch_raises_too(make_bridge, refusing):
    refuse = refusing("Budget reached: usd")
    bridge = make_bridge(reply=lambda p: refuse(p) if p == "b" else "ok")
    result = make(bridge).execute("llm_query_batched(['a', 'b'])")
    assert result.error is not None and "BudgetExceeded" in result.error


def test_output_is_capped_keeping_head_and_tail(bridge):
    result = make(bridge, limit=100).execute("print('H' * 60)\nprint('x' * 5000)\nprint('T' * 30)")
    assert len(result.stdout) < 200
    assert result.stdout.startswith("H" * 50)
    assert result.stdout.rstrip().endswith("T" * 30)
    assert "characters dropped: output limit" in result.stdout


def test_echo_of_a_huge_string_is_cut_before_repr(bridge):
    out = make(bridge, context="a" * 1_000_000 + "END", limit=100).execute("context").stdout
    assert len(out) < 400
    assert "characters not shown" in out and "END'" in out


def test_capped_text_counts_dropped_characters():
    text = CappedText(10)
    for _ in range(10):
        text.write("abcdefghij")
    kept = text.text()
    assert kept.startswith("abcde") and kept.endswith("fghij")
    assert "90 characters dropped" in kept
