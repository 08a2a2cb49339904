"""Every `kubeloop ...` command the chart and manifests run parses with the real CLI."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from tests.k8s import k8s_helpers as h
from tests.k8s.conftest import all_objects


def _commands(
    rendered: dict[str, list[h.Manifest]],
    built_overlays: dict[str, list[h.Manifest]],
    submit_job: h.Manifest,
) -> list[tuple[str, list[str]]]:
    found = []
    for origin, obj in all_objects(rendered, built_overlays, submit_job):
        for where, spec in h.pod_specs(obj):
            for container in spec.get("containers", []):
                command = container.get("command") or []
                if command[:1] == ["kubeloop"]:
                    found.append((f"{origin} {where}", [*command[1:], *container.get("args", [])]))
    return found


def _parse(argv: list[str]) -> argparse.Namespace:
    from kubeloop.cli import build_parser

    if argv[0] == "serve":
        from kubeloop.cli._serve import build_serve_parser

        return build_serve_parser().parse_args(argv[1:])
    return build_parser().parse_args(argv)


def test_commands_parse(
    rendered: dict[str, list[h.Manifest]],
    built_overlays: dict[str, list[h.Manifest]],
    submit_job: h.Manifest,
) -> None:
    commands = _commands(rendered, built_overlays, submit_job)
    assert {argv[0] for _, argv in commands} == {"serve", "monitor", "pipeline"}
    for where, argv in commands:
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                _parse(argv)
        except SystemExit:
            pytest.fail(f"{where}: `kubeloop {' '.join(argv)}` does not parse: {stderr.getvalue()}")


def test_a_wrong_flag_is_caught() -> None:
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        _parse(["monitor", "--once", "--model=churn", "--no-such-flag"])
