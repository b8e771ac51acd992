"""Executors: a Ray run writes the same rows and traces as the local one."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fathom.bench import runner
from fathom.bench.executors import LocalExecutor, RayExecutor, create
from fathom.bench.methods import Limits
from fathom.bench.results import RESULTS, read_rows
from fathom.errors import AuthenticationError, ConfigError
from fathom.lm import LM
from tests.bench.fakes import Scripted


@dataclass(frozen=True)
class Rejected:
    """A ModelSource whose key the provider rejects."""

    name: str = "rejected"
    sub_name: str = "rejected"

    def build(self, family: str, seed: int) -> tuple[LM, LM]:
        raise AuthenticationError("key rejected: set OPENAI_API_KEY")


def _comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cut = [{k: v for k, v in row.items() if k not in runner.TIMING_FIELDS} for row in rows]
    return sorted(cut, key=lambda row: runner.row_key(row))


@pytest.mark.slow
def test_a_ray_run_gives_the_local_rows(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    # The scripted models are defined in the tests: send them to the workers by value.
    cloudpickle.register_pickle_by_value(sys.modules["tests.bench.fakes"])
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    plan = runner.Plan.parse("niah", "2k,4k", 2, "direct,rlm", Scripted(usd_per_million=1.0),
                             Limits(sandbox="inprocess", max_iterations=2))
    runner.run(plan, tmp_path / "local", LocalExecutor(), concurrency=2)
    resumed = runner.run(plan, tmp_path / "local", RayExecutor())
    assert resumed.done == 0 and not ray.is_initialized()  # nothing to do: Ray never started
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        state = runner.run(plan, tmp_path / "ray", RayExecutor(), concurrency=2)
        # A rejected key on a worker stops the run with fathom's own error.
        rejected = runner.Plan.parse("niah", "2k", 1, "direct", Rejected(),
                                     Limits(sandbox="inprocess"))
        with pytest.raises(AuthenticationError, match="key rejected") as raised:
            runner.run(rejected, tmp_path / "rejected", RayExecutor())
        assert type(raised.value) is AuthenticationError  # not Ray's wrapper
    finally:
        ray.shutdown()
    local = read_rows(tmp_path / "local" / RESULTS)
    remote = read_rows(tmp_path / "ray" / RESULTS)
    assert state.done == len(local) == 8
    assert _comparable(remote) == _comparable(local)
    for row in remote:  # the traces came back from the workers
        trace = tmp_path / "ray" / row["trace"]
        assert trace.read_text().count("\n") >= 4


def test_unknown_executor_and_stray_address_are_refused() -> None:
    with pytest.raises(ConfigError, match="local, ray"):
        create("dask")
    with pytest.raises(ConfigError, match="--executor ray"):
        create("local", ray_address="ray://head:10001")


def test_missing_ray_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'fathom\[ray\]'"):
        RayExecutor()
