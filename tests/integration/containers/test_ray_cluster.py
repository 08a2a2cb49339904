"""Training on a real two-node Ray cluster: a head on this machine and a node in a container of
the component image, with its own filesystem (the ``ray_cluster`` fixture). The test process
never joins the cluster: every driver is a command of its own (``kubeloop train``, or
``_cluster_driver``), and what Ray itself says (its nodes, each node's object store) is read by
a fresh driver (:meth:`RayCluster.query`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kubeloop.data.synth import generate_churn
from tests.ray_cluster import ROOT, RayCluster
from tests.waiting import wait_for

from .conftest import S3Server

KUBELOOP = [sys.executable, "-m", "kubeloop"]
DRIVER = [sys.executable, "-m", "tests.integration.containers._cluster_driver"]
CONTAINER_IP = "127.0.0.3"


def _env(cluster: RayCluster | None, **extra: str) -> dict[str, str]:
    """The environment of a driver: the cluster's address and token, or none at all."""
    env = cluster.driver_env() if cluster else dict(os.environ)
    if cluster is None:
        for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
            env.pop(name, None)
    python_path = [str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH", "")]
    return {**env, **extra, "PYTHONPATH": os.pathsep.join(p for p in python_path if p)}


def _run(command: list[str], env: dict[str, str], timeout: float = 600) -> tuple[str, str]:
    done = subprocess.run(
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{command[2:5]} failed:\n{done.stderr[-4000:]}"
    return done.stdout, done.stderr


def _train(data: Path, out: Path, workers: str, cluster: RayCluster | None) -> dict[str, Any]:
    _, err = _run(
        [*KUBELOOP, "train", "--data", str(data), "--target", "churned", "--out", str(out),
         "--workers", workers, "--seed", "5"],
        _env(cluster),
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    return {"metrics": metrics, "progress": err}


def test_train_two_workers_one_per_node_each_with_its_shard(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    """`kubeloop train --workers 2` on the cluster: one worker per node, each node's object store
    takes in its own shard and not the whole set, and on a file sorted by the label the test
    AUC is the single-process run's."""
    frame = generate_churn(6000, seed=11)
    data = tmp_path / "sorted.parquet"
    frame.sort_values("churned", kind="stable").reset_index(drop=True).to_parquet(data)
    nodes = ray_cluster.alive_nodes()
    assert set(nodes) == {"127.0.0.2", CONTAINER_IP}
    ray_cluster.wait_idle()
    before = ray_cluster.store_stats()

    cluster_run = _train(data, tmp_path / "cluster", "2", ray_cluster)

    after = ray_cluster.store_stats()
    single = _train(data, tmp_path / "single", "0", None)
    xgb = cluster_run["metrics"]["candidates"]["xgboost"]
    placement = cluster_run["metrics"]["engine"]
    assert placement["kind"] == "ray-train-workers"
    # One worker per node, as the GCS knows them.
    assert placement["address"] == ray_cluster.address
    assert placement["workers"] == 2
    assert sorted(n["node_id"] for n in placement["nodes"]) == sorted(nodes.values())
    assert {n["node_ip"] for n in placement["nodes"]} == set(nodes)
    # Each worker holds half of the training rows, shuffled by the seed (sorted input: both
    # classes in each shard, which the AUC check below needs).
    rows = [n["rows"] for n in placement["nodes"]]
    assert abs(rows[0] - rows[1]) <= 1
    # What Ray says of the container node's object store: the shards travel inside task
    # messages, so it takes in at most its own shard's bytes, never the whole set. (The head's
    # store also takes in the fit's results -- the model, Ray Train's reports -- as large as this
    # small set: bench/cluster_train.py measures both nodes at 1M rows.)
    whole = sum(n["bytes"] for n in placement["nodes"])
    remote = next(n for n in placement["nodes"] if n["node_ip"] == CONTAINER_IP)
    pulled = after[CONTAINER_IP]["created"] - before[CONTAINER_IP]["created"]
    assert pulled <= 1.2 * remote["bytes"], (pulled, remote)
    assert pulled < 0.75 * whole, (pulled, whole)
    # The progress output says where the work ran.
    for node in placement["nodes"]:
        assert f"on node {node['node_id'][:12]} ({node['node_ip']})" in cluster_run["progress"]
    auc_single = single["metrics"]["candidates"]["xgboost"]["roc_auc"]
    assert abs(xgb["roc_auc"] - auc_single) <= 0.005, (xgb["roc_auc"], auc_single)


def test_sorted_arrays_match_single_process_on_two_nodes(ray_cluster: RayCluster) -> None:
    """The same matrices, each part sorted by the label: distributed AUC and early stopping see
    shuffled shards, so the model is as good as the single-process one."""
    out, _ = _run([*DRIVER, "20000", "300", "2"], _env(ray_cluster))
    cluster_result = json.loads(out.splitlines()[-1])
    out, _ = _run([*DRIVER, "20000", "300", "0"], _env(None))
    single = json.loads(out.splitlines()[-1])
    assert len(cluster_result["placement"]["nodes"]) == 2
    assert abs(cluster_result["auc"] - single["auc"]) <= 0.005, (cluster_result, single)


def test_fit_survives_losing_the_container_node(
    ray_cluster: RayCluster, s3_server: S3Server, tmp_path: Path
) -> None:
    """Kill the container node mid-fit: Ray Train restarts the workers once a node is back, from
    the last checkpoint in S3, and the fit finishes with every round; the log says what was
    lost and where the fit resumed."""
    bucket = s3_server.new_bucket()
    rounds, every = 3000, 100
    env = _env(ray_cluster, **s3_server.env())
    log = (tmp_path / "driver.log").open("w+")
    driver = subprocess.Popen(
        [*DRIVER, "20000", str(rounds), "2", f"s3://{bucket}/checkpoints", str(every)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
    )  # fmt: skip
    fs = s3_server.fs()
    try:

        def checkpointed() -> bool:
            assert driver.poll() is None, "the fit ended before its first checkpoint"
            fs.invalidate_cache()  # s3fs keeps listings
            # Two: a worker's second report waits until the controller took in the first
            # (a one-place queue), so the first is then the one a restart resumes from.
            return len(fs.glob(f"{bucket}/checkpoints/*/checkpoint_*")) >= 2

        wait_for(
            checkpointed,
            what="two checkpoints in S3",
            timeout=300,
            every=0.5,
        )
        ray_cluster.kill_node(CONTAINER_IP)
        ray_cluster.add_node(CONTAINER_IP)
        out, _ = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        log.seek(0)
        progress = log.read()
    assert driver.returncode == 0, progress[-4000:]
    result = json.loads(out.splitlines()[-1])
    placement = result["placement"]
    assert result["rounds"] == rounds
    assert placement["attempts"] >= 2
    lost = [entry for entry in placement["lost"] if entry["gone"]]
    assert [entry["node_ip"] for entry in lost] == [CONTAINER_IP], placement["lost"]
    lost = lost[0]
    assert placement["resumed_at_round"] >= every
    assert placement["resumed_at_round"] % every == 0
    assert (
        f"lost worker {lost['rank']} (node {lost['node_id'][:12]}, {CONTAINER_IP}): its process "
        "or node went away" in progress
    )
    assert f"resuming from the checkpoint at round {placement['resumed_at_round']}" in progress
    # The new container node took part in the resumed fit.
    assert CONTAINER_IP in {n["node_ip"] for n in placement["nodes"]}
    assert result["auc"] > 0.8


@pytest.mark.parametrize("busy", ["-", "127.0.0.2"], ids=["spread", "head-busy"])
def test_tune_on_the_cluster_best_model_reaches_the_driver(
    ray_cluster: RayCluster, busy: str
) -> None:
    """Ray Tune trials run on the cluster's nodes; the best trial's own model comes back to the
    driver whichever node ran it -- with the head's CPU taken, on the container node."""
    ray_cluster.wait_idle()  # the CPUs the last test's driver held are all back
    out, err = _run([*DRIVER, "tune", "6000", "6", busy], _env(ray_cluster))
    result = json.loads(out.splitlines()[-1])
    nodes = result["nodes"]
    trials = {t["number"]: t for t in result["trials"]}
    best = trials[result["best_trial"]]
    assert not result["refit"], err[-3000:]  # the trial's own model, not a refit
    assert result["model_rounds"] == best["rounds"]
    ran_on = {t["node"] for t in trials.values() if t["node"]}
    if busy == "-":
        # Ray's scheduler decides which free CPU takes a trial: after a node was lost and
        # replaced (the kill test) it was seen to put every trial on the container node.
        assert ran_on and ran_on <= set(nodes.values()), (ran_on, nodes)
    else:
        assert ran_on == {nodes[CONTAINER_IP]}
        assert best["node"] == nodes[CONTAINER_IP]
        assert f"on node {nodes[CONTAINER_IP][:12]}" in err


def test_remote_driver_submits_the_training_as_a_ray_job(
    ray_cluster: RayCluster, s3_server: S3Server, tmp_path: Path
) -> None:
    """A driver outside the cluster: with ``RAY_ADDRESS`` the head's Jobs API, `kubeloop train`
    submits itself as a Ray job (data and bundle by URL), streams the job's log, and the job
    trains over both nodes; a job that fails on bad data exits 2, as a local run does."""
    bucket = s3_server.new_bucket()
    fs = s3_server.fs()
    source = tmp_path / "churn.csv"
    generate_churn(4000, seed=3).to_csv(source, index=False)
    fs.put_file(str(source), f"{bucket}/data/churn.csv")
    env = _env(None, **s3_server.env(), **ray_cluster.auth_env())
    env["RAY_ADDRESS"] = ray_cluster.jobs_address
    train = [*KUBELOOP, "train", "--data", f"s3://{bucket}/data/churn.csv", "--workers", "2",
             "--seed", "5"]  # fmt: skip

    out, err = _run([*train, "--target", "churned", "--out", f"s3://{bucket}/bundles/churn"], env)

    assert "submitted Ray job kubeloop-train-" in err
    assert f"to {ray_cluster.jobs_address}" in err
    # The job's own output, streamed: its closing lines here, its progress below.
    assert "Test metrics (classification" in out, out[-3000:]
    assert f"bundle: s3://{bucket}/bundles/churn" in out
    assert "succeeded; the bundle is at" in err
    fs.invalidate_cache()
    metrics = json.loads(fs.cat_file(f"{bucket}/bundles/churn/metrics.json"))
    placement = metrics["engine"]
    assert placement["workers"] == 2
    assert {n["node_ip"] for n in placement["nodes"]} == {"127.0.0.2", CONTAINER_IP}
    assert fs.exists(f"{bucket}/bundles/churn/manifest.json")
    for node in placement["nodes"]:
        assert f"on node {node['node_id'][:12]} ({node['node_ip']})" in out

    failed = subprocess.run(
        [*train, "--target", "no_such_column", "--out", f"s3://{bucket}/bundles/bad"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert failed.returncode == 2, failed.stderr[-3000:]
    assert "no_such_column" in failed.stdout  # the job's own error, in its streamed log
    assert "ended FAILED" in failed.stderr
    assert not fs.exists(f"{bucket}/bundles/bad")
