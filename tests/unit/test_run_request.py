"""RunRequest: every run setting is checked where the request is made, in one message form."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import FrozenInstanceError
from typing import Any

import pytest

from kubeloop.cli import build_parser, main
from kubeloop.cli._pipeline import _request
from kubeloop.errors import ConfigError
from kubeloop.pipelines.launch.request import RunRequest

HOST = "http://ml-pipeline.kubeflow:8888"
BASE: dict[str, Any] = {"data": "d.csv", "target": "y"}


def _refused(message: str, **settings: Any) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        RunRequest(**{**BASE, **settings})


def test_defaults_are_a_local_run() -> None:
    request = RunRequest(**BASE)
    assert request.where == "local" and request.runner == "subprocess"
    assert (request.model_name, request.task, request.workers) == ("model", "auto", "auto")
    assert (request.num_boost_round, request.gate_margin, request.seed) == (2000, 0.0, 0)
    assert RunRequest(**BASE, host=HOST).where == "cluster"


def test_is_frozen_and_keyword_only() -> None:
    request = RunRequest(**BASE)
    with pytest.raises(FrozenInstanceError):
        request.seed = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        RunRequest("d.csv", "y")  # type: ignore[misc]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"gate_margin": -1.0}, "The 'gate_margin' parameter of RunRequest must be a float in "
         "the range [0.0, inf). Got -1.0 instead."),
        ({"gate_margin": float("nan")}, "The 'gate_margin' parameter of RunRequest must be a "
         "float in the range [0.0, inf). Got nan instead."),
        ({"num_boost_round": 0}, "The 'num_boost_round' parameter of RunRequest must be an int "
         "in the range [1, inf). Got 0 instead."),
        ({"num_boost_round": 2.5}, "The 'num_boost_round' parameter of RunRequest must be an "
         "int in the range [1, inf). Got 2.5 instead."),
        ({"seed": -1}, "The 'seed' parameter of RunRequest must be an int in the range "
         "[0, inf). Got -1 instead."),
        ({"tune_budget": -5.0}, "The 'tune_budget' parameter of RunRequest must be a float in "
         "the range [0.0, inf). Got -5.0 instead."),
        ({"canary_percent": 101}, "The 'canary_percent' parameter of RunRequest must be an int "
         "in the range [0, 100]. Got 101 instead."),
        ({"canary_percent": -1}, "The 'canary_percent' parameter of RunRequest must be an int "
         "in the range [0, 100]. Got -1 instead."),
        ({"task": "ranking"}, "The 'task' parameter of RunRequest must be one of 'auto', "
         "'classification', 'regression'. Got 'ranking' instead."),
        ({"runner": "k8s"}, "The 'runner' parameter of RunRequest must be one of "
         "'subprocess', 'docker'. Got 'k8s' instead."),
    ],
)  # fmt: skip
def test_out_of_range_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    _refused(message, **settings)


@pytest.mark.parametrize(
    "settings",
    [
        {"gate_margin": 0.0, "num_boost_round": 1, "seed": 0, "tune_budget": 0.0},
        {"canary_percent": 0}, {"canary_percent": 100}, {"canary_percent": None},
        {"task": "regression", "runner": "docker", "image": "kubeloop:dev"},
    ],
)  # fmt: skip
def test_the_edges_of_each_range_are_allowed(settings: dict[str, Any]) -> None:
    RunRequest(**BASE, **settings)


def test_workers_are_parsed_like_the_option() -> None:
    assert RunRequest(**BASE, workers="AUTO").workers == "auto"
    assert RunRequest(**BASE, workers="2").workers == 2
    with pytest.raises(ConfigError, match="workers must be 'auto' or a whole number >= 0"):
        RunRequest(**BASE, workers=-1)


def test_model_name_follows_the_name_rule() -> None:
    with pytest.raises(ConfigError, match=r"model name '\.\./x' is not allowed"):
        RunRequest(**BASE, model_name="../x")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"runner": "docker"}, "The 'runner' parameter of RunRequest must be 'subprocess' for "
         "a cluster run (runner and image apply to local runs, host=None). Got 'docker' "
         "instead."),
        ({"image": "kubeloop:dev"}, "The 'image' parameter of RunRequest must be None for a "
         "cluster run (runner and image apply to local runs, host=None). Got 'kubeloop:dev' "
         "instead."),
    ],
)  # fmt: skip
def test_local_only_options_are_refused_for_a_cluster_run(
    settings: dict[str, Any], message: str
) -> None:
    _refused(message, host=HOST, **settings)


@pytest.mark.parametrize(
    ("flags", "shown"),
    [
        (["--host", HOST, "--runner", "docker"], "The 'runner' parameter of RunRequest"),
        (["--local", "--canary-percent", "150"], "The 'canary_percent' parameter of RunRequest "
         "must be an int in the range [0, 100]. Got 150 instead."),
        (["--local", "--num-boost-round", "0"], "The 'num_boost_round' parameter"),
        (["--host", HOST, "--ray-worker-cpu", "two"], "ray_worker_cpu must be a positive "
         "Kubernetes quantity (e.g. 2 or 500m), got 'two'."),
        (["--host", HOST, "--ray-deadline", "0"], "ray_deadline_s must be a whole number >= 1"),
    ],
)  # fmt: skip
def test_the_cli_shows_a_refused_request_as_one_error_line(
    flags: list[str], shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before anything starts: no KFP server is asked, no local run begins."""
    argv = ["pipeline", "run", *flags, "--data", "d.csv", "--target", "y"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {captured.err[7:]}" and shown in captured.err
    assert captured.err.count("\n") == 1 and captured.out == ""


def test_a_request_is_made_without_loading_kfp() -> None:
    """The CLI and the monitor build requests before (or without) any kfp work."""
    script = (
        "import sys\n"
        "from kubeloop.pipelines import RunRequest\n"
        "RunRequest(data='d.csv', target='y', workers='2', ray_head_cpu='2')\n"
        "print(sorted(m for m in ('kfp', 'pandas', 'ray', 'xgboost') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_rayjob_sizes_become_pipeline_parameters_only_when_set() -> None:
    """`pipeline run --ray-head-memory 16Gi --ray-deadline 7200 ...`: those two parameters go
    to the pipeline; the others keep the pipeline's defaults."""
    from kubeloop.pipelines.launch.runs import pipeline_arguments

    argv = ["pipeline", "run", "--host", HOST, "--data", "s3://b/d.csv", "--target", "y"]
    args = build_parser().parse_args([*argv, "--ray-head-memory", "16Gi", "--ray-deadline", "7200"])
    request = _request(args, host=HOST)
    arguments = pipeline_arguments(request)
    assert arguments["ray_head_memory"] == "16Gi"
    assert arguments["ray_deadline_s"] == 7200
    assert not {"ray_head_cpu", "ray_worker_cpu", "ray_worker_memory"} & set(arguments)
