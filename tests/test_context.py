"""Context: every input kind, errors that say what to do, metadata, and the worker round trip."""

from __future__ import annotations

import codecs
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fathom import textfile
from fathom.context import PREVIEW_CHARS, Context, load_spec
from fathom.errors import ContextError
from fathom.prompts import describe_context

MULTIBYTE = "héllo wörld — 日本語 😀\n"  # 1-, 2-, 3- and 4-byte UTF-8 characters


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="")
    return path


# -- in-memory values ------------------------------------------------------------------------
def test_str_metadata_and_describe() -> None:
    ctx = Context.from_value("line one\nline two")
    meta = ctx.metadata()
    assert ctx.kind == "str" and ctx.load() == "line one\nline two"
    assert (meta.total_chars, meta.items, meta.lines) == (17, 1, 2)
    text = describe_context(meta)
    assert "Type: str (17 characters in 2 lines)" in text and "line two" in text


def test_long_str_preview_is_head_and_tail_within_limit() -> None:
    body = "A" * 1000 + "M" * 10_000 + "Z" * 1000
    meta = Context.from_text(body).metadata()
    assert len(meta.preview) + len(meta.tail) <= PREVIEW_CHARS
    assert meta.preview.startswith("A") and meta.tail.endswith("Z")
    described = describe_context(meta)
    assert "M" not in described.replace("Last", "").replace("Type", "")  # nothing from the middle
    assert described.count("A") + described.count("Z") <= PREVIEW_CHARS + 5


def test_list_metadata_item_lengths() -> None:
    ctx = Context.from_value(["ab", "abcd", {"k": 1}, [1, 2, 3]])
    meta = ctx.metadata()
    assert ctx.kind == "list" and meta.items == 4
    # non-str items count their JSON length: {"k": 1} is 8 chars, [1, 2, 3] is 9
    assert meta.item_lengths == {"min": 2, "median": 6.0, "max": 9}
    assert meta.total_chars == 2 + 4 + 8 + 9
    assert "median 6" in describe_context(meta)


def test_dict_metadata_first_keys_and_bounded_preview() -> None:
    value = {f"doc{i:03}": "x" * 2000 for i in range(50)}
    meta = Context.from_value(value).metadata()
    assert meta.kind == "dict" and meta.items == 50
    assert meta.keys[:2] == ("doc000", "doc001") and len(meta.keys) == 10
    assert len(meta.preview) <= PREVIEW_CHARS and meta.preview.startswith('{"doc000": "xxx')
    assert "(and 40 more)" in describe_context(meta)
    assert len(describe_context(meta)) < 1500


def test_existing_context_is_returned_as_is() -> None:
    ctx = Context.from_text("abc")
    assert Context.from_value(ctx) is ctx


def test_tuple_is_accepted_as_list() -> None:
    assert Context.from_value(("a", "b")).load() == ["a", "b"]


@pytest.mark.parametrize(
    ("value", "where", "hint"),
    [
        ({"a": [1, b"raw"]}, "context['a'][1]", "decode it"),
        ([{"when": object()}], "context[0]['when']", "convert it"),
        ({1: "x"}, "key 1", "str(k)"),
        (b"bytes", "context", "decode it"),
        (42, "context", "pass a str"),
    ],
)
def test_non_json_values_name_the_path_and_the_fix(value: object, where: str, hint: str) -> None:
    with pytest.raises(ContextError) as err:
        Context.from_value(value)
    assert where in str(err.value) and hint in str(err.value)


def test_reference_cycle_is_a_context_error() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ContextError, match="contains itself"):
        Context.from_value(loop)


# -- files -----------------------------------------------------------------------------------
def test_file_metadata_counts_multibyte_chars_without_decoding(tmp_path: Path) -> None:
    text = MULTIBYTE * 100_000  # ~3.4 MB: several 1 MiB chunks, characters split across them
    path = write(tmp_path / "big.txt", text)
    ctx = Context.from_path(path)
    meta = ctx.metadata()
    assert meta.total_chars == len(text) and meta.lines == 100_000
    assert meta.preview == text[: len(meta.preview)] and text.endswith(meta.tail)
    assert meta.source == str(path)
    assert ctx.load() == text and ctx.load() is ctx.load()  # decoded once, then cached


def test_file_without_final_newline_counts_last_line(tmp_path: Path) -> None:
    meta = Context.from_path(write(tmp_path / "a.txt", "one\ntwo")).metadata()
    assert meta.lines == 2 and meta.total_chars == 7


def test_empty_input_is_an_error_saying_what_was_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ContextError, match=r"empty.txt is empty"):
        Context.from_path(write(tmp_path / "empty.txt", ""))
    with pytest.raises(ContextError, match="Standard input is empty"):
        Context.from_stdin(io.BytesIO(b""))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    with pytest.raises(ContextError, match="Standard input is empty"):
        Context.from_paths(["-"])
    write(tmp_path / "dir" / "a.txt", "")
    write(tmp_path / "dir" / "b.txt", "")
    with pytest.raises(ContextError, match=r"2 text file\(s\) of directory .*dir are all empty"):
        Context.from_path(tmp_path / "dir")
    with pytest.raises(ContextError, match="No text files found"):
        Context.from_path((tmp_path / "nothing").mkdir() or tmp_path / "nothing")
    with pytest.raises(ContextError, match="empty str"):
        Context.from_value("")
    assert Context.from_value([]).metadata().items == 0  # an empty list or dict is a value
    assert Context.from_value({}).load() == {}


def test_scan_matches_decode_for_chunk_boundaries(tmp_path: Path) -> None:
    # A 4-byte character straddling the 1 MiB chunk boundary must count as one.
    text = "a" * (textfile.CHUNK - 2) + "😀" + "b" * 10
    path = write(tmp_path / "edge.txt", text)
    scan = textfile.scan_text(path, "strict", 500, 100)
    assert scan.chars == len(text) and scan.tail.endswith("b" * 10)


def test_invalid_utf8_file_is_an_error_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(ContextError) as err:
        Context.from_path(path)
    message = str(err.value)
    assert str(path) in message and "not UTF-8" in message and "errors='replace'" in message
    assert "--encoding latin-1" in message and "--encoding-errors replace" in message
    assert "byte 3" in message


def test_invalid_utf8_with_errors_replace(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("café".encode("latin-1"))
    ctx = Context.from_path(path, errors="replace")
    assert ctx.load() == "caf\ufffd" and ctx.metadata().total_chars == 4
    assert load_spec(ctx.worker_spec(tmp_path / "scratch")) == "caf\ufffd"


def test_missing_path_names_it(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="does not exist"):
        Context.from_value(tmp_path / "nope.txt")


def test_unknown_errors_mode(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="'strict' or 'replace'"):
        Context.from_path(write(tmp_path / "a.txt", "x"), errors="ignore")


# -- directories and path lists --------------------------------------------------------------
@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    write(root / "README.md", "# Project\n")
    write(root / "src" / "main.py", "print('héllo')\n")
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    (root / "old.txt").write_bytes("naïve".encode("latin-1"))
    write(root / ".git" / "config", "[core]\n")
    write(tmp_path / "secret.txt", "outside\n")
    os.symlink(tmp_path / "secret.txt", root / "escape.txt")
    os.symlink(root / "README.md", root / "readme-link.md")
    return root


def test_directory_is_a_dict_of_text_files(project: Path) -> None:
    ctx = Context.from_path(project)
    value = ctx.load()
    assert ctx.kind == "dict"
    assert value == {"README.md": "# Project\n", "readme-link.md": "# Project\n",
                     "src/main.py": "print('héllo')\n"}
    meta = ctx.metadata()
    assert meta.skipped == ("escape.txt", "logo.png", "old.txt")
    assert meta.skip_reasons["logo.png"] == "binary"
    assert meta.skip_reasons["old.txt"] == "not UTF-8 text"
    assert "outside" in meta.skip_reasons["escape.txt"]
    described = describe_context(meta)
    assert "logo.png (binary)" in described and "'src/main.py'" in described
    assert ".git" not in json.dumps(meta.to_dict())
    assert meta.total_chars == 10 + 10 + 15 and meta.items == 3


def test_directory_worker_spec_points_at_the_files(project: Path, tmp_path: Path) -> None:
    ctx = Context.from_path(project)
    spec = ctx.worker_spec(tmp_path / "scratch")
    json.dumps(spec)
    assert spec["format"] == "files" and not (tmp_path / "scratch").exists()
    assert str((project / "src" / "main.py").resolve()) in spec["paths"]
    assert load_spec(spec) == ctx.load()


def test_directory_without_text_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "only.bin").write_bytes(b"\0\1\2")
    with pytest.raises(ContextError, match=r"No text files.*only.bin \(binary\)"):
        Context.from_path(tmp_path)


def test_from_paths_single_file_is_str(tmp_path: Path) -> None:
    ctx = Context.from_paths([write(tmp_path / "a.txt", "alpha")])
    assert ctx.kind == "str" and ctx.load() == "alpha"


def test_from_paths_several_files_and_globs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "notes.txt", "n")
    write(tmp_path / "logs" / "a.log", "A")
    write(tmp_path / "logs" / "b.log", "B")
    write(tmp_path / "logs" / "skip.txt", "S")
    ctx = Context.from_paths(["notes.txt", "logs/*.log"])
    assert ctx.load() == {"logs/a.log": "A", "logs/b.log": "B", "notes.txt": "n"}


def test_from_paths_directory_keys_keep_its_name(tmp_path: Path, project: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    value = Context.from_paths(["project", "secret.txt"]).load()
    assert isinstance(value, dict)
    assert set(value) == {"project/README.md", "project/readme-link.md",
                          "project/src/main.py", "secret.txt"}


def test_from_paths_errors(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="matched no files"):
        Context.from_paths([str(tmp_path / "*.nothing")])
    with pytest.raises(ContextError, match="No context given"):
        Context.from_paths([])


def test_stdin_is_spooled_to_a_file_and_removed_on_close(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.BytesIO(MULTIBYTE.encode() * 3)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(stream))
    ctx = Context.from_paths(["-"])
    spec = ctx.worker_spec("/unused")
    assert ctx.metadata().source == "<stdin>" and ctx.metadata().total_chars == len(MULTIBYTE) * 3
    assert load_spec(spec) == MULTIBYTE * 3
    ctx.close()
    assert not Path(spec["path"]).exists()


# -- worker spec -----------------------------------------------------------------------------
def test_file_backed_spec_points_at_the_original(tmp_path: Path) -> None:
    path = write(tmp_path / "doc.txt", MULTIBYTE)
    spec = Context.from_path(path).worker_spec(tmp_path / "scratch")
    assert spec["path"] == str(path.resolve()) and spec["paths"] == [str(path.resolve())]
    assert not (tmp_path / "scratch").exists()  # nothing copied


@pytest.mark.parametrize(
    "value",
    ["plain " + MULTIBYTE * 1000, "lone \ud800 surrogate\r\n", ["a", 1, 2.5, None, True],
     {"k": {"nested": [MULTIBYTE, {"x": None}]}}, [], {},
     list(range(2500)), {f"key{i}": [i, str(i)] for i in range(2500)}],  # several write batches
)
def test_in_memory_round_trip(tmp_path: Path, value: object) -> None:
    ctx = Context.from_value(value)
    spec = ctx.worker_spec(tmp_path)
    assert json.loads(json.dumps(spec)) == spec
    assert load_spec(spec) == value


def test_temp_file_written_once_and_removed(tmp_path: Path) -> None:
    ctx = Context.from_value({"a": "b"})
    first = ctx.worker_spec(tmp_path)
    written = Path(first["path"])
    mtime = written.stat().st_mtime_ns
    for _ in range(3):  # worker restarts ask again
        assert ctx.worker_spec(tmp_path) == first
    assert written.stat().st_mtime_ns == mtime
    assert list(tmp_path.iterdir()) == [written]
    ctx.close()
    assert not written.exists()


def test_temp_file_rewritten_only_if_its_scratch_was_deleted(tmp_path: Path) -> None:
    ctx = Context.from_value("text")
    first = Path(ctx.worker_spec(tmp_path / "one")["path"])
    first.unlink()
    second = Path(ctx.worker_spec(tmp_path / "two")["path"])
    assert second.parent == tmp_path / "two" and second.read_text() == "text"


def test_load_spec_in_a_fresh_process(tmp_path: Path) -> None:
    path = write(tmp_path / "doc.txt", MULTIBYTE * 50_000)  # > 1 MiB: the mmap path
    spec = Context.from_path(path).worker_spec(tmp_path)
    code = ("import json, sys; from fathom.context import load_spec; "
            "v = load_spec(json.loads(sys.argv[1])); print(len(v))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True,
                         text=True, check=True)
    assert int(out.stdout) == len(MULTIBYTE) * 50_000


def test_unknown_spec_is_a_clear_error() -> None:
    with pytest.raises(ContextError, match="same fathom version"):
        load_spec({"v": 99, "format": "pickle"})


def test_metadata_to_dict_is_json() -> None:
    meta = Context.from_value({"a": [1, 2]}).metadata()
    assert json.loads(json.dumps(meta.to_dict()))["items"] == 1


def test_out_of_memory_in_the_worker_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes(b"0123456789abcdef" * (4 << 20))  # 64 MiB: needs ~128 MiB to load
    code = (
        "import json, resource, sys\n"
        "from fathom.context import load_spec\n"
        "from fathom.errors import ContextError\n"
        "vm = [int(line.split()[1]) for line in open('/proc/self/status')"
        " if line.startswith('VmSize')][0] * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + (96 << 20), resource.RLIM_INFINITY))\n"
        "try:\n"
        "    load_spec(json.loads(sys.argv[1]))\n"
        "except ContextError as exc:\n"
        "    print(exc)\n"
    )
    spec = Context.from_path(path).worker_spec(tmp_path)
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to size the memory limit")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True,
                         text=True, timeout=60)
    assert "Not enough memory" in out.stdout and "memory_mb" in out.stdout, out.stderr


def test_benchmark_measure_runs_and_agrees(tmp_path: Path) -> None:
    import importlib.util

    script = Path(__file__).parent.parent / "benchmarks" / "context_load.py"
    spec = importlib.util.spec_from_file_location("context_load", script)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = bench.measure(2 << 20, unicode=True)
    assert row["chars"] > 0 and row["peak_rss_mb"] > 0 and row["start_seconds"] < 5
    assert "| 2 MB |" in bench.table([row])


def test_stdin_among_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from a pipe")))
    ctx = Context.from_paths(["-", str(write(tmp_path / "a.txt", "file"))])
    value = ctx.load()
    assert isinstance(value, dict) and value["<stdin>"] == "from a pipe"
    spooled = Path(ctx.worker_spec(tmp_path)["files"]["<stdin>"])
    ctx.close()
    assert not spooled.exists()


def test_stdin_of_a_path_list_that_fails_is_removed(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool_dir))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from a pipe")))
    with pytest.raises(ContextError, match="matched no files"):
        Context.from_paths(["-", str(tmp_path / "*.nothing")])
    assert not list(spool_dir.iterdir())


def test_a_spill_replaced_by_a_symlink_is_written_again(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    ctx = Context.from_value("public text")
    spilled = Path(ctx.worker_spec(scratch)["path"])
    spilled.unlink()
    spilled.symlink_to(secret)
    spec = ctx.worker_spec(scratch)
    assert load_spec(spec) == "public text"
    ctx.close()


def test_a_closed_stdin_context_cannot_be_used_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"piped text")))
    ctx = Context.from_stdin()
    ctx.close()
    with pytest.raises(ContextError, match="no longer exists"):
        ctx.load()


def test_an_existing_file_with_glob_characters_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "notes[1].txt"
    path.write_text("literal")
    assert Context.from_paths([str(path)]).load() == "literal"


# -- encodings -------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be",
                                      "utf-32"])
def test_a_byte_order_mark_names_the_encoding(tmp_path: Path, encoding: str) -> None:
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}.get(encoding, b"")
    text = MULTIBYTE * 3
    path = tmp_path / "wide.txt"
    path.write_bytes(bom + text.encode(encoding))
    ctx = Context.from_path(path)
    meta = ctx.metadata()
    assert meta.total_chars == len(text) and meta.lines == 3 and meta.preview == text
    assert ctx.load() == text  # no BOM character, no NULs
    spec = ctx.worker_spec(tmp_path / "scratch")
    code = ("import json, sys; from fathom.context import load_spec; "
            "print(ascii(load_spec(json.loads(sys.argv[1]))))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == ascii(text)  # the worker decodes it the same way
    folder = Context.from_path(tmp_path)
    assert folder.load() == {"wide.txt": text} and not folder.skipped


def test_a_long_utf16_file_counts_and_previews_like_utf8(tmp_path: Path) -> None:
    text = MULTIBYTE * 100_000  # several chunks
    path = tmp_path / "long.txt"
    path.write_bytes(text.encode("utf-16"))
    meta = Context.from_path(path).metadata()
    assert meta.total_chars == len(text) and meta.lines == 100_000
    assert text.startswith(meta.preview) and text.endswith(meta.tail)


def test_encoding_is_named_for_a_file_a_directory_and_stdin(tmp_path: Path) -> None:
    path = tmp_path / "old" / "latin1.txt"
    path.parent.mkdir()
    path.write_bytes("café naïve".encode("latin-1"))
    assert Context.from_path(path, encoding="latin-1").load() == "café naïve"
    assert Context.from_paths([tmp_path / "old"], encoding="latin-1").load() == {
        "latin1.txt": "café naïve"}
    stdin = Context.from_stdin(io.BytesIO("olé".encode("cp1252")), encoding="cp1252")
    assert stdin.load() == "olé"
    with pytest.raises(ContextError, match="Unknown encoding 'klingon'"):
        Context.from_path(path, encoding="klingon")


def test_a_nul_heavy_file_is_refused_as_binary_at_once(tmp_path: Path) -> None:
    sparse = tmp_path / "disk.img"
    with open(sparse, "wb") as handle:
        handle.truncate(2 * 2**30)  # 2 GB of NULs, sparse: nothing is written
    with pytest.raises(ContextError, match=r"disk.img is binary.*--encoding utf-16-le"):
        Context.from_path(sparse)
    write(tmp_path / "notes.txt", "text")
    ctx = Context.from_path(tmp_path)
    assert ctx.load() == {"notes.txt": "text"} and ctx.metadata().skip_reasons == {
        "disk.img": "binary"}
    with pytest.raises(ContextError, match="<stdin> is binary"):
        Context.from_stdin(io.BytesIO(b"\0" * 100))


# -- what a directory leaves out -------------------------------------------------------------
@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    write(root / "main.py", "print(1)\n")
    write(root / ".gitignore", "*.log\n!keep.log\ngenerated/\n")
    write(root / "run.log", "noise")
    write(root / "keep.log", "kept")
    write(root / "generated" / "out.txt", "made")
    write(root / "docs" / ".gitignore", "draft.md\n")
    write(root / "docs" / "draft.md", "draft")
    write(root / "docs" / "guide.md", "guide")
    write(root / "draft.md", "not under docs: kept")
    write(root / ".git" / "info" / "exclude", "local.txt\n")
    write(root / "local.txt", "mine")
    for folder in (".venv/lib/site.py", ".venv/bin/activate", "node_modules/x/index.js",
                   "src/__pycache__/m.pyc", "pkg.egg-info/PKG-INFO", "build/lib/a.py"):
        write(root / folder, "x")
    return root


def test_a_directory_honours_gitignore_and_skips_tool_folders(repo: Path) -> None:
    ctx = Context.from_path(repo)
    assert set(ctx.load()) == {".gitignore", "main.py", "keep.log", "docs/.gitignore",
                               "docs/guide.md", "draft.md"}
    reasons = ctx.metadata().skip_reasons
    assert reasons == {
        ".venv/": "skipped by default, 2 files", "build/": "skipped by default, 1 file",
        "docs/draft.md": "ignored by .gitignore", "generated/": "ignored by .gitignore, 1 file",
        "local.txt": "ignored by .gitignore", "node_modules/": "skipped by default, 1 file",
        "pkg.egg-info/": "skipped by default, 1 file", "run.log": "ignored by .gitignore",
        "src/__pycache__/": "skipped by default, 1 file",
    }
    assert ".venv/ (skipped by default, 2 files)" in describe_context(ctx.metadata())


def test_include_ignored_reads_everything_but_vcs_folders(repo: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = Context.from_path(repo, include_ignored=True)
    value = ctx.load()
    assert isinstance(value, dict) and len(value) == 16 and not ctx.skipped
    assert ".venv/lib/site.py" in value and "run.log" in value
    assert not any(key.startswith(".git/") for key in value)
    monkeypatch.chdir(tmp_path)
    listed = Context.from_paths(["repo", "repo/main.py"]).metadata().skip_reasons
    assert "repo/.venv/" in listed
    assert "repo/.venv/lib/site.py" in Context.from_paths(["repo", "repo/main.py"],
                                                          include_ignored=True).load()
