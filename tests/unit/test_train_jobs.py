"""`kubeloop train` with a Ray Jobs API address: what is checked before anything is submitted,
and what of the shell's environment the job carries. (The submission itself, against a real
head, is in tests/integration/containers/test_ray_cluster.py.)"""

from __future__ import annotations

import pytest

from kubeloop.cli import main
from kubeloop.training.jobs import is_jobs_address, job_environment
from kubeloop.training.storage import is_url

# Nothing listens here: a test that reached the submission would fail to connect.
NOWHERE = "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("address", "jobs"),
    [
        ("http://head:8265", True),
        ("https://ray.example.com", True),
        ("head:6379", False),
        ("ray://head:10001", False),
        ("auto", False),
        (None, False),
    ],
)
def test_which_addresses_are_the_jobs_api(address: str | None, jobs: bool) -> None:
    assert is_jobs_address(address) is jobs


def test_urls_and_paths() -> None:
    assert is_url("s3://bucket/key")
    assert not is_url("data/churn.csv")
    assert not is_url("file:///tmp/churn.csv")  # a local file: the cluster cannot read it


def test_the_job_carries_storage_and_kubeloop_settings_only() -> None:
    env = {
        "AWS_ENDPOINT_URL": "http://s3:8333",
        "AWS_ACCESS_KEY_ID": "key",
        "KUBELOOP_RAY_STORAGE": "s3://b/ckpt",
        "HOME": "/root",
        "RAY_ADDRESS": NOWHERE,
        "PATH": "/usr/bin",
    }
    assert job_environment(env) == {
        "AWS_ENDPOINT_URL": "http://s3:8333",
        "AWS_ACCESS_KEY_ID": "key",
        "KUBELOOP_RAY_STORAGE": "s3://b/ckpt",
    }


@pytest.mark.parametrize(
    ("data", "out", "flag"),
    [
        ("data/churn.csv", "s3://b/bundle", "--data"),
        ("s3://b/churn.csv", "out/bundle", "--out"),
        ("s3://b/churn.csv", None, "--out"),
    ],
)
def test_local_data_or_bundle_is_refused_before_submitting(
    data: str, out: str | None, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--data", data, "--target", "churned", "--ray-address", NOWHERE]
    code = main([*argv, *(["--out", out] if out else [])])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{flag} must be a URL the cluster can reach" in err
    assert NOWHERE in err
    assert "Could not submit" not in err  # refused here, not by a failed connection


def test_an_unreachable_jobs_api_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--data", "s3://b/churn.csv", "--target", "churned", "--out", "s3://b/o"]
    assert main([*argv, "--ray-address", NOWHERE]) == 2
    assert f"Could not submit the training to the Ray Jobs API at {NOWHERE}" in (
        capsys.readouterr().err
    )
