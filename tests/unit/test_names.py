"""The one name rule (kubeloop.names) and the places that apply it without starting anything."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from kubeloop.cli import main
from kubeloop.errors import BundleError, ConfigError, RegistryError
from kubeloop.names import check_name, is_valid_name, model_name_arg
from kubeloop.registry import Registry
from kubeloop.serving import ServeOptions

GOOD = ["churn", "a", "Telco_churn-2.v1", "v20261130120000-abc123", "x" * 63]
BAD = ["", "../../tmp/x", "..", ".", ".hidden", "a/b", "a\\b", "x" * 64, "ok\n", " churn", "naïve"]


@pytest.mark.parametrize("name", GOOD)
def test_good_names_pass(name: str) -> None:
    assert is_valid_name(name)
    assert check_name(name) == name
    assert model_name_arg(name) == name


@pytest.mark.parametrize("name", [*BAD, None, 3, ["churn"]])
def test_bad_names_are_refused_everywhere_with_one_message(name: object) -> None:
    assert not is_valid_name(name)
    with pytest.raises(ConfigError, match="is not allowed; use 1-63 letters"):
        check_name(name)
    with pytest.raises(BundleError, match="manifest: model name"):
        check_name(name, what="manifest: model name", error=BundleError)
    if isinstance(name, str):
        with pytest.raises(argparse.ArgumentTypeError, match="is not allowed"):
            model_name_arg(name)


def test_a_huge_name_is_quoted_short() -> None:
    with pytest.raises(ConfigError) as caught:
        check_name("x" * 1_000_000)
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize("name", ["../../tmp/x", ".hidden", "a/b"])
def test_registry_and_serve_options_use_the_rule(name: str, tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    for call in (registry.versions, registry.champion):
        with pytest.raises(RegistryError, match="is not allowed"):
            call(name)
    with pytest.raises(ConfigError, match=r"--model_name .* is not allowed"):
        ServeOptions(model_dir=tmp_path, name=name)
    with pytest.raises(ConfigError, match=r"--model .* is not allowed"):
        ServeOptions(registry=str(tmp_path), model=name)


@pytest.mark.parametrize(
    "argv",
    [
        ["monitor", "--model", "../../tmp/x", "--registry", "r", "--metrics-url", "http://x"],
        ["pipeline", "run", "--local", "--data", "d.csv", "--target", "y", "--model", "a/b"],
        ["demo", "--model", ".hidden"],
        ["rollback", "--model", "../x", "--to", "v1"],
        ["train", "--data", "d.csv", "--target", "y", "--name", "../x"],
    ],
)
def test_every_model_name_flag_uses_the_rule(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "model name" in err and "is not allowed; use 1-63 letters" in err
