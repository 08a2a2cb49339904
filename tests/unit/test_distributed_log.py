"""What a distributed fit tells about itself (no Ray needed): the placement record of the attempt
that finished, and the progress lines of its log."""

from __future__ import annotations

from kubeloop.training.distributed import _describe, _Run, _shard
from kubeloop.training.engine import Engine


def _took(rank: int, ip: str, resumed: int = 0) -> dict[str, object]:
    return {
        "event": "shard", "rank": rank, "workers": 2, "node_id": f"node-{ip}-0123456789",
        "node_ip": ip, "rows": 500, "validation_rows": 100, "bytes": 4000,
        "resumed_at_round": resumed,
    }  # fmt: skip


def test_placement_is_the_last_attempt_and_names_what_was_lost() -> None:
    run = _Run(Engine(2, 1, "127.0.0.2:6379", "test"), "s3://b/c", 50, lambda _: None)
    run.address = "127.0.0.2:6379"
    lost = {
        "event": "lost", "attempt": 1, "rank": 1, "node_id": "node-127.0.0.3-0123456789",
        "node_ip": "127.0.0.3", "reason": "actor died", "gone": True,
    }  # fmt: skip
    run.log = [
        _took(0, "127.0.0.2"), _took(1, "127.0.0.3"), lost,
        _took(1, "127.0.0.3", 150), _took(0, "127.0.0.2", 150),
    ]  # fmt: skip
    placement = run.placement()
    assert placement["attempts"] == 2
    assert placement["resumed_at_round"] == 150
    assert [n["rank"] for n in placement["nodes"]] == [0, 1]
    assert [n["node_ip"] for n in placement["nodes"]] == ["127.0.0.2", "127.0.0.3"]
    assert placement["lost"] == [lost]
    assert placement["checkpoint_every"] == 50
    assert _describe(lost).startswith("lost worker 1 (node node-127.0.0, 127.0.0.3)")
    assert "its process or node went away (actor died)" in _describe(lost)
    assert "resuming from the checkpoint at round 150" in _describe(_took(0, "127.0.0.2", 150))
    assert "stopped: boom" in _describe({**lost, "gone": False, "reason": "boom"})


def test_a_silent_worker_on_a_dead_node_is_confirmed_lost() -> None:
    """A killed node's worker may not have failed its health check yet when the worker beside it
    fails in the collective: it is noted without a reason, and named lost once the GCS lists its
    node as dead."""
    said: list[str] = []
    run = _Run(Engine(2, 1, "127.0.0.2:6379", "test"), "s3://b/c", 50, said.append)
    head, gone = _took(0, "127.0.0.2"), _took(1, "127.0.0.3")
    common = {"event": "lost", "attempt": 1, "gone": False}
    failed = {**common, "rank": 0, "node_id": head["node_id"], "node_ip": "127.0.0.2",
              "reason": "connection reset by peer"}  # fmt: skip
    silent = {**common, "rank": 1, "node_id": gone["node_id"], "node_ip": "127.0.0.3",
              "reason": None}  # fmt: skip
    run.log = [head, gone, failed, silent, _took(0, "127.0.0.2", 50), _took(1, "127.0.0.4", 50)]
    assert [e["rank"] for e in run.placement()["lost"]] == [0]
    run.confirm_losses({"node-127.0.0.9-0123456789"})
    assert said == [] and [e["gone"] for e in run.placement()["lost"]] == [False]
    run.confirm_losses({gone["node_id"]})
    lost = run.placement()["lost"]
    assert [(e["rank"], e["gone"]) for e in lost] == [(0, False), (1, True)]
    assert said == [_describe(lost[1])]
    assert said[0].startswith("lost worker 1 (node node-127.0.0, 127.0.0.3): its process or node")
    assert run.placement()["attempts"] == 2


def test_no_storage_no_checkpoints() -> None:
    run = _Run(Engine(2, 1, None, "test"), None, 50, lambda _: None)
    assert run.checkpoint_every == 0


def test_shards_cover_every_row_once() -> None:
    for rows in (7, 10, 1001):
        for size in (1, 2, 3):
            taken = [i for rank in range(size) for i in range(rows)[_shard(rows, rank, size)]]
            assert taken == list(range(rows))
