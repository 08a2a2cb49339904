"""Promotions and rollbacks as one operation: the registry pointer, the MLflow aliases, the journal.

Every transition of a staged rollout -- a candidate started (:func:`start_canary`,
:func:`start_shadow`), promoted (:func:`promote_candidate`) or rolled back
(:func:`rollback_candidate`), and a rollback of the champion (:func:`rollback_champion`, the
``kubeloop rollback`` command) -- runs the same four steps:

1. ``journal``: ``<root>/<model>/transition`` records the intent: ``kind``, the pointer record
   before (``from``) and the exact record about to be written (``to``), ``started``, ``pid``
   and ``host``.
2. ``pointer``: one atomic write of ``<root>/<model>/champion``, the commit point. Model servers
   follow the pointer, so before it the old champion and candidate are served, after it the new.
3. ``aliases``: MLflow's ``champion`` and ``candidate`` aliases are made to name the pointer's
   versions (:func:`kubeloop.registry.tracking.set_aliases`), when a tracking store exists.
4. ``done``: the journal is removed.

A process killed between two steps leaves the journal behind. :func:`recover` -- run by every
monitor start, by ``kubeloop rollback`` and by a transition that finds a journal -- reads it:
if the pointer holds the journal's ``to`` record the transition committed and steps 3-4 are
redone (roll forward); if it still holds ``from`` the transition never happened and the journal
is dropped (the previous state kept serving throughout). Either way the MLflow aliases are then
checked against the pointer and re-synced when they disagree.

Test hook: with ``KUBELOOP_CRASH_AT`` set to a step name (``journal``, ``pointer``, ``aliases``,
``done``) the process SIGKILLs itself right after that step, so tests can interrupt a transition
at every point. It is not meant for anything else.

Transitions from two processes at once are not serialized (no lock): one whose journal names a
live process on this host is refused, but two hosts can still race.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubeloop.errors import ConfigError, RegistryError
from kubeloop.registry._store import BeforeWrite, Registry

__all__ = [
    "CRASH_ENV",
    "CRASH_STEPS",
    "Transition",
    "pid_alive",
    "promote_candidate",
    "recover",
    "rollback_candidate",
    "rollback_champion",
    "start_canary",
    "start_shadow",
]

CRASH_ENV = "KUBELOOP_CRASH_AT"
CRASH_STEPS = ("journal", "pointer", "aliases", "done")


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Transition:
    """What one promotion or rollback changed (for the log, metrics, MLflow and the report).

    Attributes:
        kind: ``start_canary``, ``start_shadow``, ``promote``, ``rollback_candidate`` or
            ``rollback`` (of the champion).
        model: The model name.
        before: The pointer record before (``None``: the model had no champion).
        after: The pointer record written.
        at: When the pointer was written (UTC, ISO 8601).
        aliases: What happened to the MLflow aliases, one line.
        recovered: What :func:`recover` did first, when it found an interrupted transition.
    """

    kind: str
    model: str
    before: dict[str, Any] | None
    after: dict[str, Any]
    at: str
    aliases: str = ""
    recovered: str | None = None

    @property
    def champion_before(self) -> str | None:
        """The champion before the transition."""
        return None if self.before is None else str(self.before["version"])

    @property
    def champion_after(self) -> str:
        """The champion after the transition."""
        return str(self.after["version"])

    @property
    def candidate_before(self) -> str | None:
        """The candidate before the transition (``None``: none)."""
        return _candidate_of(self.before)

    @property
    def candidate_after(self) -> str | None:
        """The candidate after the transition (``None``: none)."""
        return _candidate_of(self.after)

    @property
    def line(self) -> str:
        """One human line: what is served now and what it replaced."""
        return f"{self.model}: {_describe(self.kind, self.before, self.after)}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (``kind``, ``model``, champion/candidate before and after...)."""
        return {
            "kind": self.kind,
            "model": self.model,
            "at": self.at,
            "champion_before": self.champion_before,
            "champion_after": self.champion_after,
            "candidate_before": self.candidate_before,
            "candidate_after": self.candidate_after,
            "mode": (self.after.get("candidate") or {}).get("mode"),
            "percent": (self.after.get("candidate") or {}).get("percent"),
            "aliases": self.aliases,
            "recovered": self.recovered,
            "line": self.line,
        }


def _candidate_of(record: dict[str, Any] | None) -> str | None:
    entry = None if record is None else record.get("candidate")
    return str(entry["version"]) if isinstance(entry, dict) and "version" in entry else None


def _describe(kind: str, before: dict[str, Any] | None, after: dict[str, Any]) -> str:
    champion = after["version"]
    old = None if before is None else before["version"]
    candidate = after.get("candidate") or {}
    if kind == "start_canary":
        return (
            f"candidate {candidate.get('version')} in canary at {candidate.get('percent')}% "
            f"beside champion {champion}"
        )
    if kind == "start_shadow":
        return f"candidate {candidate.get('version')} in shadow beside champion {champion}"
    if kind == "promote":
        return f"champion {old} -> {champion} (candidate promoted)"
    if kind == "rollback_candidate":
        return f"candidate {_candidate_of(before)} rolled back; champion {champion} kept"
    dropped = _candidate_of(before)
    tail = f" (candidate {dropped} dropped)" if dropped else ""
    return f"champion {old} -> {champion} (rolled back){tail}"


# -- the test hook --------------------------------------------------------------------------


def _crash_step() -> str | None:
    step = os.environ.get(CRASH_ENV) or None
    if step is not None and step not in CRASH_STEPS:
        raise ConfigError(
            f"{CRASH_ENV}={step!r} is not a transition step; use one of {', '.join(CRASH_STEPS)} "
            "(a test hook) or unset it."
        )
    return step


def _after(step: str) -> None:
    """The test hook: SIGKILL this process right after ``step`` when ``KUBELOOP_CRASH_AT``
    names it."""
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


# -- the MLflow aliases ---------------------------------------------------------------------


def _sync_aliases(model: str, record: dict[str, Any] | None, tracking_uri: str | None) -> str:
    """Make MLflow's aliases match ``record``; one line saying what happened."""
    from kubeloop.registry import tracking

    if record is None:  # no champion: nothing for the aliases to name (and nothing removed)
        return "MLflow aliases skipped: the registry has no champion"
    uri = tracking.existing_store(tracking_uri)
    if uri is None:
        return "MLflow aliases skipped: no tracking store"
    outcome = tracking.set_aliases(
        model,
        champion_version=str(record["version"]),
        candidate_version=_candidate_of(record),
        tracking_uri=uri,
    )
    parts = list(outcome["changed"]) or ["MLflow aliases already agree"]
    if outcome["changed"]:
        parts[0] = f"MLflow aliases: {parts[0]}"
    return "; ".join([*parts, *outcome["notes"]])


# -- the transitions ------------------------------------------------------------------------


def _transition(
    registry: Registry,
    model: str,
    kind: str,
    write: Callable[[BeforeWrite], dict[str, Any]],
    tracking_uri: str | None,
) -> Transition:
    """The four steps around one pointer write (``write`` calls the registry's writer)."""
    _crash_step()  # a misspelt test hook is refused before anything is written
    recovered = None
    if registry.transition_record(model) is not None:  # else step 3 re-syncs the aliases anyway
        recovered = recover(registry, model, tracking_uri=tracking_uri)
        if registry.transition_record(model) is not None:  # a live transition elsewhere
            raise RegistryError(f"{recovered}; try again when it has finished.")
    seen: dict[str, Any] = {}

    def journal(before: dict[str, Any] | None, after: dict[str, Any]) -> None:
        seen["before"] = before
        registry.write_transition(
            model,
            {
                "kind": kind,
                "model": model,
                "from": before,
                "to": after,
                "started": _now(),
                "pid": os.getpid(),
                "host": socket.gethostname(),
            },
        )
        _after("journal")

    after = write(journal)
    at = _now()
    _after("pointer")
    try:
        aliases = _sync_aliases(model, after, tracking_uri)
    except Exception as exc:  # committed: the journal stays and recover retries the aliases
        aliases = (
            f"MLflow aliases not moved ({type(exc).__name__}: {exc}); the journal is kept and "
            "the next recover (monitor start, kubeloop rollback) moves them"
        )
        return Transition(kind, model, seen.get("before"), after, at, aliases, recovered)
    _after("aliases")
    registry.clear_transition(model)
    _after("done")
    return Transition(kind, model, seen.get("before"), after, at, aliases, recovered)


def start_canary(
    registry: Registry,
    model: str,
    version: str,
    *,
    percent: float,
    tracking_uri: str | None = None,
) -> Transition:
    """Serve ``version`` as a canary: it answers ``percent``% of requests beside the champion.

    Args:
        registry: The registry.
        model: The model name (it must have a champion).
        version: A registered version other than the champion.
        percent: The canary share, in (0, 100].
        tracking_uri: The MLflow store; ``None``: :func:`tracking.default_tracking_uri`, and
            the aliases are skipped when that store does not exist.

    Returns:
        What changed.

    Raises:
        RegistryError, ConfigError: As :meth:`Registry.start_candidate`; nothing was written.
    """
    return _transition(
        registry,
        model,
        "start_canary",
        lambda hook: registry.start_candidate(
            model, version, mode="canary", percent=percent, before_write=hook
        ),
        tracking_uri,
    )


def start_shadow(
    registry: Registry, model: str, version: str, *, tracking_uri: str | None = None
) -> Transition:
    """Serve ``version`` in shadow: it scores the champion's rows off the response path.

    Arguments, result and errors as :func:`start_canary`.
    """
    return _transition(
        registry,
        model,
        "start_shadow",
        lambda hook: registry.start_candidate(
            model, version, mode="shadow", percent=0, before_write=hook
        ),
        tracking_uri,
    )


def _current_candidate(registry: Registry, model: str, version: str | None) -> str:
    entry = registry.candidate(model)
    if entry is None:
        raise RegistryError(
            f"model {model!r} has no candidate in {registry.root}; there is nothing to promote "
            "or roll back (start one with --rollout canary|shadow)."
        )
    if version is not None and entry["version"] != version:
        raise RegistryError(
            f"the candidate of {model!r} is {entry['version']!r}, not {version!r}; it changed "
            "since it was judged: judge the current candidate again."
        )
    return str(entry["version"])


def promote_candidate(
    registry: Registry,
    model: str,
    *,
    version: str | None = None,
    tracking_uri: str | None = None,
) -> Transition:
    """Make the candidate the champion (100% of traffic); the old champion becomes ``previous``.

    Args:
        registry: The registry.
        model: The model name.
        version: When given, the candidate must still be this version (what was judged).
        tracking_uri: As in :func:`start_canary`.

    Raises:
        RegistryError: No candidate, or another candidate than ``version``; nothing was written.
    """
    candidate = _current_candidate(registry, model, version)
    return _transition(
        registry,
        model,
        "promote",
        lambda hook: registry.promote(model, candidate, before_write=hook),
        tracking_uri,
    )


def rollback_candidate(
    registry: Registry,
    model: str,
    *,
    version: str | None = None,
    tracking_uri: str | None = None,
) -> Transition:
    """Remove the candidate; the champion goes on answering every request.

    Arguments and errors as :func:`promote_candidate`.
    """
    _current_candidate(registry, model, version)
    return _transition(
        registry,
        model,
        "rollback_candidate",
        lambda hook: registry.end_candidate(model, before_write=hook),
        tracking_uri,
    )


def rollback_champion(
    registry: Registry,
    model: str,
    *,
    to: str | None = None,
    tracking_uri: str | None = None,
) -> Transition:
    """Serve ``to`` -- by default the previous champion -- again; any candidate is dropped.

    The ``kubeloop rollback`` command.

    Raises:
        RegistryError: As :meth:`Registry.rollback` (no previous champion, unknown ``to``...);
            nothing was written.
    """
    return _transition(
        registry,
        model,
        "rollback",
        lambda hook: registry.rollback(model, to, before_write=hook),
        tracking_uri,
    )


# -- recovery -------------------------------------------------------------------------------


def _alive_here(journal: dict[str, Any]) -> bool:
    """Whether the journal's process runs on this host (and is not this process)."""
    pid = journal.get("pid")
    if journal.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    return pid != os.getpid() and pid > 0 and pid_alive(pid)


def pid_alive(pid: int) -> bool:
    """Whether a process with id ``pid`` (> 0) runs on this host (one of another user's too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(registry: Registry, model: str, *, tracking_uri: str | None = None) -> str | None:
    """Finish or drop an interrupted transition of ``model``; re-sync the MLflow aliases.

    Called on every monitor start, by ``kubeloop rollback`` and by a transition that finds a
    journal.

    * A journal whose ``to`` record is the pointer: the transition committed; its aliases are
      moved and the journal removed ("completed an interrupted ...").
    * A journal whose ``from`` record is still the pointer: it never committed; the journal is
      dropped ("abandoned an interrupted ...; the previous state kept serving").
    * A journal of a process still running on this host is left alone.
    * Then the MLflow aliases are compared with the pointer and moved where they disagree.

    Args:
        registry: The registry.
        model: The model name.
        tracking_uri: As in :func:`start_canary`.

    Returns:
        One line saying what was done, or ``None`` when everything already agreed.

    Raises:
        RegistryError: The pointer or the journal is unreadable.
    """
    journal = registry.transition_record(model)
    if journal is not None and _alive_here(journal):
        return (
            f"a {journal.get('kind')} of {model!r} by process {journal.get('pid')} on this host "
            "is in progress; left alone"
        )
    pointer = registry.champion_record(model)
    said: list[str] = []
    if journal is not None:
        kind = str(journal.get("kind"))
        before, after = journal.get("from"), journal.get("to")
        what = (
            _describe(kind, before, after)
            if isinstance(after, dict) and "version" in after
            else "an unknown change"
        )
        if pointer is not None and pointer == after:
            said.append(f"completed an interrupted {kind} of {model!r} ({what})")
        elif pointer == before:
            serving = "no champion" if pointer is None else f"champion {pointer['version']}"
            candidate = _candidate_of(pointer)
            serving += f", candidate {candidate}" if candidate else ""
            said.append(
                f"abandoned an interrupted {kind} of {model!r} ({what}) before its pointer "
                f"write; the previous state kept serving ({serving})"
            )
        else:
            said.append(
                f"dropped the journal of an interrupted {kind} of {model!r} ({what}): the "
                f"pointer has changed since (champion "
                f"{None if pointer is None else pointer['version']})"
            )
    aliases = _sync_aliases(model, pointer, tracking_uri)
    if journal is not None:
        said.append(aliases)
        registry.clear_transition(model)
    elif aliases.startswith("MLflow aliases:"):
        said.append(f"re-synced {model!r} with its registry pointer: {aliases}")
    return "; ".join(said) or None
