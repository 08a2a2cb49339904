"""Promotions and rollbacks (kubeloop.registry.rollout): the journal, the pointer, MLflow's aliases.

The crash tests run each transition in a process of its own that SIGKILLs itself after one
step (``KUBELOOP_CRASH_AT``), then recover in this one and check that the registry pointer and
a real MLflow sqlite store agree -- and that up to the pointer write the pointer still named the
old champion and candidate.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from kubeloop.errors import ConfigError, RegistryError
from kubeloop.registry import Registry, rollout
from tests.unit.test_registry import _bundle

ROOT = Path(__file__).resolve().parents[2]
MODEL = "churn"


@pytest.fixture(autouse=True)
def _no_default_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test tracks into the user's store: the default one lies in an empty home."""
    monkeypatch.setenv("KUBELOOP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(rollout.CRASH_ENV, raising=False)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A registry with versions v0 (previous), v1 (champion), v2 (canary at 20%)."""
    base = tmp_path_factory.mktemp("template")
    registry = Registry(base / "registry")
    versions = [registry.register(_bundle(base, weight=w)) for w in (0.1, 0.5, 0.9)]
    registry.promote(MODEL, versions[0])
    registry.promote(MODEL, versions[1])
    registry.start_candidate(MODEL, versions[2], mode="canary", percent=20)
    return {"root": base / "registry", "versions": versions}


@pytest.fixture(scope="module")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory, template: dict[str, Any]) -> Path:
    """A real MLflow sqlite store: model versions of v0-v2, aliases champion=v1, candidate=v2."""
    from kubeloop.registry.tracking import _client, set_aliases

    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    uri = f"sqlite:///{path}"
    client = _client(uri)  # MLflow makes the store's tables on first use
    client.create_registered_model(MODEL)
    for version in template["versions"]:
        client.create_model_version(
            MODEL, source=f"{path.parent}/artifacts/{version}", tags={"kubeloop.version": version}
        )
    _v0, v1, v2 = template["versions"]
    set_aliases(MODEL, champion_version=v1, candidate_version=v2, tracking_uri=uri)
    return path


def _registry(template: dict[str, Any], tmp_path: Path) -> Registry:
    shutil.copytree(template["root"], tmp_path / "registry")
    return Registry(tmp_path / "registry")


def _store(mlflow_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "mlflow" / "mlflow.db"
    path.parent.mkdir()
    shutil.copyfile(mlflow_template, path)
    return f"sqlite:///{path}"


def _pointer(registry: Registry) -> dict[str, Any]:
    record = registry.champion_record(MODEL)
    assert record is not None
    return record


def _served(record: dict[str, Any]) -> dict[str, str | None]:
    candidate = record.get("candidate")
    return {"champion": record["version"], "candidate": candidate and candidate["version"]}


# -- transitions without MLflow -------------------------------------------------------------


def test_every_transition_moves_the_pointer_and_leaves_no_journal(
    template: dict[str, Any], tmp_path: Path
) -> None:
    v0, v1, v2 = template["versions"]
    registry = _registry(template, tmp_path)
    before = _pointer(registry)

    promoted = rollout.promote_candidate(registry, MODEL, version=v2)
    assert (promoted.kind, promoted.champion_before, promoted.champion_after) == ("promote", v1, v2)
    assert (promoted.candidate_before, promoted.candidate_after) == (v2, None)
    assert promoted.before == before and promoted.after == _pointer(registry)
    assert _pointer(registry)["previous"] == v1
    assert promoted.line == f"churn: champion {v1} -> {v2} (candidate promoted)"
    assert promoted.aliases == "MLflow aliases skipped: no tracking store"

    shadow = rollout.start_shadow(registry, MODEL, v0)
    assert registry.candidate(MODEL) == {
        "version": v0,
        "mode": "shadow",
        "percent": 0,
        "started": shadow.after["candidate"]["started"],
    }
    assert shadow.to_dict()["mode"] == "shadow" and shadow.champion_after == v2
    ended = rollout.rollback_candidate(registry, MODEL)
    assert ended.line == f"churn: candidate {v0} rolled back; champion {v2} kept"
    assert registry.candidate(MODEL) is None and _pointer(registry)["previous"] == v1

    canary = rollout.start_canary(registry, MODEL, v0, percent=5)
    assert canary.line == f"churn: candidate {v0} in canary at 5% beside champion {v2}"
    back = rollout.rollback_champion(registry, MODEL)
    assert back.line == f"churn: champion {v2} -> {v1} (rolled back) (candidate {v0} dropped)"
    assert _served(_pointer(registry)) == {"champion": v1, "candidate": None}
    assert json.loads(json.dumps(back.to_dict()))["champion_after"] == v1
    assert sorted(p.name for p in (tmp_path / "registry" / MODEL).iterdir()) == [
        "champion",
        "versions",
    ]


def test_transitions_on_object_storage(template: dict[str, Any], tmp_path: Path) -> None:
    """The same operations over fsspec (memory:// stands in for s3://)."""
    v0, v1, v2 = template["versions"]
    root = f"memory://kubeloop-rollout-{os.getpid()}/registry"
    registry = Registry(root)
    try:
        for version in template["versions"]:
            registry.register(template["root"] / MODEL / "versions" / version)
        registry.promote(MODEL, v1)
        rollout.start_canary(registry, MODEL, v2, percent=12.5)
        assert registry.candidate(MODEL)["percent"] == 12.5  # type: ignore[index]
        done = rollout.promote_candidate(registry, MODEL)
        assert done.champion_after == v2 and registry.transition_record(MODEL) is None
        assert rollout.rollback_champion(registry, MODEL, to=v0).champion_after == v0
    finally:
        fsspec.filesystem("memory").rm(f"/kubeloop-rollout-{os.getpid()}", recursive=True)


def test_refusals_write_nothing(
    template: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v0, _v1, v2 = template["versions"]
    registry = _registry(template, tmp_path)
    before = _pointer(registry)
    with pytest.raises(RegistryError, match=f"the candidate of 'churn' is '{v2}', not '{v0}'"):
        rollout.promote_candidate(registry, MODEL, version=v0)
    with pytest.raises(RegistryError, match="already has candidate"):
        rollout.start_canary(registry, MODEL, v0, percent=10)
    with pytest.raises(RegistryError, match="no such version; pass one of the known versions"):
        rollout.rollback_champion(registry, MODEL, to="v0-nope")
    monkeypatch.setenv(rollout.CRASH_ENV, "pointr")
    with pytest.raises(ConfigError, match="KUBELOOP_CRASH_AT='pointr' is not a transition step"):
        rollout.rollback_candidate(registry, MODEL)
    monkeypatch.delenv(rollout.CRASH_ENV)
    rollout.rollback_candidate(registry, MODEL)
    with pytest.raises(RegistryError, match=r"has no candidate .* nothing to promote"):
        rollout.promote_candidate(registry, MODEL)
    assert _pointer(registry)["version"] == before["version"]
    assert registry.transition_record(MODEL) is None


# -- recovery from a journal (written by hand) ----------------------------------------------


def _journal(registry: Registry, kind: str, before: Any, after: Any, **extra: Any) -> None:
    registry.write_transition(
        MODEL,
        {
            "kind": kind,
            "model": MODEL,
            "from": before,
            "to": after,
            "started": "t",
            "pid": 1,
            "host": "elsewhere",
            **extra,
        },
    )


def test_recover_rolls_forward_drops_or_leaves_a_live_transition(
    template: dict[str, Any], tmp_path: Path
) -> None:
    _v0, v1, v2 = template["versions"]
    registry = _registry(template, tmp_path)
    assert rollout.recover(registry, MODEL) is None  # nothing to do
    now = _pointer(registry)
    planned = {"version": v2, "updated": "later", "previous": v1}

    _journal(registry, "promote", now, planned)  # the pointer write never happened
    said = rollout.recover(registry, MODEL)
    assert said is not None and said.startswith(
        f"abandoned an interrupted promote of 'churn' (champion {v1} -> {v2} (candidate "
        f"promoted)) before its pointer write; the previous state kept serving (champion {v1}, "
        f"candidate {v2})"
    )
    assert _pointer(registry) == now and registry.transition_record(MODEL) is None

    _journal(registry, "rollback", planned, now)  # the pointer is the journal's "to"
    said = rollout.recover(registry, MODEL)
    assert said is not None and said.startswith("completed an interrupted rollback of 'churn'")
    assert registry.transition_record(MODEL) is None

    _journal(registry, "promote", planned, {**planned, "updated": "x"})  # neither
    said = rollout.recover(registry, MODEL)
    assert said is not None and "the pointer has changed since" in said
    assert registry.transition_record(MODEL) is None

    _journal(registry, "promote", now, planned, pid=os.getppid(), host=socket.gethostname())
    said = rollout.recover(registry, MODEL)
    assert said is not None and "is in progress; left alone" in said
    assert registry.transition_record(MODEL) is not None
    with pytest.raises(RegistryError, match="in progress; left alone; try again"):
        rollout.rollback_candidate(registry, MODEL)
    assert _pointer(registry) == now


def test_a_failed_alias_move_keeps_the_journal_for_recover(
    template: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubeloop.registry import tracking

    _v0, v1, v2 = template["versions"]
    registry = _registry(template, tmp_path)

    def down(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise ConnectionError("MLflow is down")

    monkeypatch.setattr(tracking, "existing_store", lambda uri=None: "http://mlflow:5000")
    monkeypatch.setattr(tracking, "set_aliases", down)
    done = rollout.promote_candidate(registry, MODEL)
    assert done.champion_after == v2  # committed: the new champion serves
    assert "MLflow aliases not moved (ConnectionError: MLflow is down)" in done.aliases
    assert registry.transition_record(MODEL) is not None

    moved = {"changed": ["champion -> v2"], "notes": []}
    monkeypatch.setattr(tracking, "set_aliases", lambda *a, **k: moved)
    said = rollout.recover(registry, MODEL)
    assert said == (
        f"completed an interrupted promote of 'churn' (champion {v1} -> {v2} (candidate "
        "promoted)); MLflow aliases: champion -> v2"
    )
    assert registry.transition_record(MODEL) is None


# -- MLflow aliases -------------------------------------------------------------------------


def test_set_aliases_follows_kubeloop_versions(
    template: dict[str, Any], mlflow_template: Path, tmp_path: Path
) -> None:
    from kubeloop.registry.tracking import model_aliases, set_aliases

    v0, v1, v2 = template["versions"]
    uri = _store(mlflow_template, tmp_path)
    assert model_aliases(MODEL, tracking_uri=uri) == {"champion": v1, "candidate": v2}
    same = set_aliases(MODEL, champion_version=v1, candidate_version=v2, tracking_uri=uri)
    assert same["changed"] == [] and same["notes"] == []
    moved = set_aliases(MODEL, champion_version=v2, candidate_version=None, tracking_uri=uri)
    assert moved["changed"] == [
        "champion -> " + v2 + " (model version 3)",
        ("candidate removed (was model version 3)"),
    ]
    assert model_aliases(MODEL, tracking_uri=uri) == {"champion": v2, "candidate": None}
    unknown = set_aliases(
        MODEL, champion_version="v0-never", candidate_version=None, tracking_uri=uri
    )
    assert unknown["notes"] == [
        "v0-never was never registered in MLflow model 'churn': alias 'champion' skipped"
    ]
    assert model_aliases(MODEL, tracking_uri=uri) == {"champion": None, "candidate": None}
    other = set_aliases("other", champion_version=v1, candidate_version=None, tracking_uri=uri)
    assert other["notes"] == [
        f"MLflow has no registered model 'other': the aliases of {v1} were skipped"
    ]

    registry = _registry(template, tmp_path)
    set_aliases(MODEL, champion_version=v0, candidate_version=None, tracking_uri=uri)
    said = rollout.recover(registry, MODEL, tracking_uri=uri)  # aliases disagree: re-synced
    assert said is not None and said.startswith("re-synced 'churn' with its registry pointer")
    assert model_aliases(MODEL, tracking_uri=uri) == {"champion": v1, "candidate": v2}
    assert rollout.recover(registry, MODEL, tracking_uri=uri) is None


# -- kill -9 at every step ------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    return env


# One fresh interpreter imports kubeloop and MLflow once, then forks one process per case:
# the child runs the transition with KUBELOOP_CRASH_AT set (and dies by SIGKILL); the parent
# reports how it ended. Each case pays a fork, not MLflow's import (seconds).
_FORKER = """
import json, os, sys, traceback
from kubeloop.registry import Registry, rollout
import mlflow.store.model_registry.sqlalchemy_store, mlflow.tracking  # paid once, here
print("ready", flush=True)
for line in sys.stdin:
    root, kind, uri, step = json.loads(line)
    child = os.fork()
    if child == 0:
        os.environ["KUBELOOP_CRASH_AT"] = step
        code = 0
        try:
            registry = Registry(root)
            if kind == "promote":
                rollout.promote_candidate(registry, "churn", tracking_uri=uri)
            elif kind == "rollback_candidate":
                rollout.rollback_candidate(registry, "churn", tracking_uri=uri)
            else:
                rollout.rollback_champion(registry, "churn", tracking_uri=uri)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        os._exit(code)
    _, status = os.waitpid(child, 0)
    killed = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    print(json.dumps({"signal": killed, "status": os.waitstatus_to_exitcode(status)}), flush=True)
"""


@pytest.fixture(scope="module")
def forker() -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", _FORKER],
        env=_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    yield process
    assert process.stdin is not None
    process.stdin.close()
    process.wait(timeout=60)


def _crash(forker: subprocess.Popen[str], *case: str) -> dict[str, Any]:
    assert forker.stdin is not None and forker.stdout is not None
    forker.stdin.write(json.dumps(case) + "\n")
    forker.stdin.flush()
    lines = []
    while not (line := forker.stdout.readline()).startswith("{"):
        assert line, "the forking process died"
        lines.append(line)
    return {**json.loads(line), "output": "".join(lines)}


@pytest.mark.parametrize("step", rollout.CRASH_STEPS)
@pytest.mark.parametrize("kind", ["promote", "rollback_candidate", "rollback"])
def test_kill_at_every_step_then_recover(
    kind: str,
    step: str,
    template: dict[str, Any],
    mlflow_template: Path,
    forker: subprocess.Popen[str],
    tmp_path: Path,
) -> None:
    from kubeloop.registry.tracking import model_aliases

    v0, v1, v2 = template["versions"]
    registry = _registry(template, tmp_path)
    uri = _store(mlflow_template, tmp_path)
    old = _served(_pointer(registry))
    new = {
        "promote": {"champion": v2, "candidate": None},
        "rollback_candidate": {"champion": v1, "candidate": None},
        "rollback": {"champion": v0, "candidate": None},
    }[kind]
    assert old == {"champion": v1, "candidate": v2} == model_aliases(MODEL, tracking_uri=uri)

    died = _crash(forker, str(registry.root), kind, uri, step)
    assert died["signal"] == signal.SIGKILL, died
    committed = step != "journal"
    # Until the pointer write the old champion and candidate are what the pointer says.
    assert _served(_pointer(registry)) == (new if committed else old)
    assert (registry.transition_record(MODEL) is None) == (step == "done")
    aliases_moved = step in ("aliases", "done")
    assert model_aliases(MODEL, tracking_uri=uri) == (new if aliases_moved else old)

    said = rollout.recover(registry, MODEL, tracking_uri=uri)
    if step == "journal":
        assert said is not None and said.startswith(f"abandoned an interrupted {kind}")
        assert f"the previous state kept serving (champion {v1}, candidate {v2})" in said
    elif step in ("pointer", "aliases"):
        assert said is not None and said.startswith(f"completed an interrupted {kind}")
    else:
        assert said is None
    expected = new if committed else old
    assert _served(_pointer(registry)) == expected
    assert model_aliases(MODEL, tracking_uri=uri) == expected
    assert registry.transition_record(MODEL) is None
    assert rollout.recover(registry, MODEL, tracking_uri=uri) is None  # all agree now


# -- kubeloop rollback ----------------------------------------------------------------------


def _kubeloop(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubeloop", *args],
        env=_env(KUBELOOP_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_rollback_command_end_to_end(
    template: dict[str, Any], mlflow_template: Path, tmp_path: Path
) -> None:
    from kubeloop.registry.tracking import model_aliases

    v0, v1, v2 = template["versions"]
    registry = _registry(template, tmp_path)
    uri = _store(mlflow_template, tmp_path)
    _journal(registry, "promote", _pointer(registry), {"version": v2, "updated": "t"})
    done = _kubeloop(
        "rollback",
        "--model",
        MODEL,
        "--registry",
        str(registry.root),
        "--mlflow-uri",
        uri,
        home=tmp_path / "home",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"churn: champion {v1} -> {v0} (rolled back) (candidate {v2} dropped)"
    ]
    assert "recovered: abandoned an interrupted promote of 'churn'" in done.stderr
    assert _served(_pointer(registry)) == {"champion": v0, "candidate": None}
    assert model_aliases(MODEL, tracking_uri=uri) == {"champion": v0, "candidate": None}
    assert registry.transition_record(MODEL) is None


def test_rollback_command_errors_are_one_line(template: dict[str, Any], tmp_path: Path) -> None:
    v0, v1, v2 = template["versions"]
    registry = _registry(template, tmp_path)
    home = tmp_path / "home"
    unknown = _kubeloop(
        "rollback",
        "--model",
        MODEL,
        "--to",
        "v0-nope",
        "--registry",
        str(registry.root),
        home=home,
    )
    assert unknown.returncode == 2
    assert unknown.stderr.splitlines() == [
        f"error: cannot roll 'churn' back to 'v0-nope': {registry.root} has no such version; "
        f"pass one of the known versions with --to VERSION: {', '.join(sorted([v0, v1, v2]))}."
    ]
    to_v0 = _kubeloop(
        "rollback", "--model", MODEL, "--to", v0, "--registry", str(registry.root), home=home
    )
    assert to_v0.returncode == 0 and to_v0.stdout.startswith(f"churn: champion {v1} -> {v0}")
    assert "MLflow aliases skipped: no tracking store" in to_v0.stderr
    empty = _kubeloop(
        "rollback", "--model", "nothing", "--registry", str(tmp_path / "r"), home=home
    )
    assert empty.returncode == 2
    assert empty.stderr.startswith("error: model 'nothing' has no champion in")
    assert len(empty.stderr.splitlines()) == 1
