"""kubeloop.training.engine without Ray: parsing ``workers``, choosing the engine with no cluster,
the --workers option, and Ray's log lines held back unless the body fails."""

from __future__ import annotations

import logging
import os

import pytest

from kubeloop.cli import main
from kubeloop.errors import ConfigError
from kubeloop.training import TrainConfig
from kubeloop.training.engine import ray_logs_held, resolve_engine, shared_local_ray


@pytest.mark.parametrize(("value", "parsed"), [("auto", "auto"), (" AUTO ", "auto"), ("0", 0),
                                              ("3", 3), (2, 2)])  # fmt: skip
def test_workers_parse(value: str | int, parsed: str | int) -> None:
    assert TrainConfig(workers=value).workers == parsed  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["-1", "two", "", "1.5", -2])
def test_bad_workers_are_refused(value: str | int) -> None:
    with pytest.raises(ConfigError, match=r"workers must be 'auto' or a whole number >= 0"):
        TrainConfig(workers=value)  # type: ignore[arg-type]


def test_bad_workers_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["train", "--data", "x.csv", "--target", "y", "--workers", "-1"])
    assert exited.value.code == 2
    assert "argument --workers: workers must be 'auto'" in capsys.readouterr().err


def test_auto_without_a_cluster_trains_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    engine = resolve_engine("auto")
    assert engine.in_process and engine.cpus_per_worker == (os.cpu_count() or 1)
    line = engine.describe()
    assert line.startswith("engine: in this process (Ray Train local mode")
    assert "workers=auto and no Ray cluster configured" in line
    assert resolve_engine(0).in_process


def test_explicit_workers_are_obeyed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    engine = resolve_engine(3)
    assert (engine.workers, engine.cpus_per_worker, engine.address) == (3, 1, None)
    assert "3 Ray Train worker(s) x 1 CPU on a local Ray" in engine.describe()
    monkeypatch.setenv("RAY_ADDRESS", "ray-head:6379")  # not contacted: the count is explicit
    assert "the Ray cluster at ray-head:6379" in resolve_engine(2).describe()


def test_nothing_is_shared_without_local_ray_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for workers in ("auto", 0):
        with shared_local_ray(workers) as address:
            assert address is None and "RAY_ADDRESS" not in os.environ
    monkeypatch.setenv("RAY_ADDRESS", "ray-head:6379")
    with shared_local_ray(2) as address:  # a configured cluster is used as it is
        assert address is None
    with shared_local_ray("auto", tuning=True) as address:  # tuning runs use it too
        assert address is None


def test_auto_trains_in_process_beside_the_shared_local_ray(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The local Ray that consecutive tuned runs share is no cluster to train XGBoost on."""
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    monkeypatch.setenv("KUBELOOP_SHARED_RAY", "127.0.0.1:6379")
    engine = resolve_engine("auto")  # not contacted: it is the shared local Ray
    assert engine.in_process and engine.address is None
    assert "the local Ray shared by consecutive runs (127.0.0.1:6379), not a cluster" in (
        engine.describe()
    )


def test_ray_log_lines_show_only_when_the_body_fails(capsys: pytest.CaptureFixture[str]) -> None:
    import ray  # noqa: F401 -- Ray's loggers as they are set up outside the context

    warning = "Token authentication is enabled for this Ray cluster."
    before = list(logging.getLogger("ray").handlers)
    with ray_logs_held():
        logging.getLogger("ray._private.authentication").warning(warning)
    assert warning not in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="boom"), ray_logs_held():
        logging.getLogger("ray.train").warning(warning)
        raise RuntimeError("boom")
    assert warning in capsys.readouterr().err
    # Ray's own handlers are back (they write to the stream of their creation: not capsys's)
    assert logging.getLogger("ray").handlers == before
