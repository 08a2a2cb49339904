"""RBAC: each identity gets exactly what the code it runs calls, and nothing else.

Two halves, so that neither the chart nor the code can drift alone:

1. `API_CALLS` says which Kubernetes / KFP API methods each cluster-facing function of
   kubeloop calls; an AST scan of src/kubeloop checks that table against the code (a new
   call, or a call from a new place, fails here).
2. Each ServiceAccount runs a known set of those functions (`RUNS`); the permissions they
   need (`PERMISSIONS`) must equal, exactly, the rules the chart binds to that account.
"""

from __future__ import annotations

import ast
from collections import defaultdict

import pytest

from tests.k8s import k8s_helpers as h

SRC = h.ROOT / "src" / "kubeloop"

# A rule, flattened: (apiGroup, resource, resourceName or "", verb).
Grant = tuple[str, str, str, str]

# The API methods that reach a cluster: kfp.Client and kubernetes.client.CustomObjectsApi.
KFP_METHODS = {
    "create_run_from_pipeline_package": {
        ("experiments", "list"),
        ("experiments", "create"),
        ("runs", "create"),
    },
    "create_run_from_pipeline_func": {
        ("experiments", "list"),
        ("experiments", "create"),
        ("runs", "create"),
    },
    "run_pipeline": {("runs", "create")},
    "create_experiment": {("experiments", "list"), ("experiments", "create")},
    "get_experiment": {("experiments", "list")},
    "list_experiments": {("experiments", "list")},
    "create_recurring_run": {("jobs", "create")},
    "list_recurring_runs": {("jobs", "list")},
    "get_run": {("runs", "get")},
    "list_runs": {("runs", "list")},
    "wait_for_run_completion": {("runs", "get")},
    "terminate_run": {("runs", "terminate")},
    "upload_pipeline": {("pipelines", "create")},
}
K8S_VERBS = {
    "get_namespaced_custom_object": "get",
    "get_namespaced_custom_object_status": "get",
    "list_namespaced_custom_object": "list",
    "create_namespaced_custom_object": "create",
    "patch_namespaced_custom_object": "patch",
    "patch_namespaced_custom_object_status": "patch",
    "replace_namespaced_custom_object": "update",
    "delete_namespaced_custom_object": "delete",
}
ALL_METHODS = set(KFP_METHODS) | set(K8S_VERBS)

# module:function -> API methods it calls (checked against the code below).
API_CALLS: dict[str, set[str]] = {
    "pipelines/launch/cluster.py:submit_run": {"create_run_from_pipeline_package"},
    "pipelines/launch/cluster.py:schedule_runs": {"create_experiment", "create_recurring_run"},
    "pipelines/launch/cluster.py:run_state": {"get_run"},
    "pipelines/steps/deploy.py:deploy_inference_service": {
        "get_namespaced_custom_object",
        "patch_namespaced_custom_object",
    },
    "pipelines/steps/rayjob.py:submit_rayjob": {"create_namespaced_custom_object"},
    "pipelines/steps/rayjob.py:wait_rayjob": {"get_namespaced_custom_object"},
}
# The custom resource each Kubernetes-calling module addresses.
RESOURCE_OF_MODULE = {
    "pipelines/steps/deploy.py": ("serving.kserve.io", "inferenceservices", "churn"),
    "pipelines/steps/rayjob.py": ("ray.io", "rayjobs", ""),
}

MONITOR = ("kubeloop", "kubeloop-monitor")
PIPELINES = ("kubeloop", "kubeloop-pipelines")
RUNNER = ("kubeflow", "pipeline-runner")

# What runs as whom: the monitor CronJob starts and follows retraining runs; the run
# submitters (schedule Job, manifests/submit-run-job.yaml) create runs and the schedule; KFP
# runs the deploy and train steps as its runner.
RUNS: dict[tuple[str, str], list[str]] = {
    MONITOR: ["pipelines/launch/cluster.py:submit_run", "pipelines/launch/cluster.py:run_state"],
    PIPELINES: [
        "pipelines/launch/cluster.py:submit_run",
        "pipelines/launch/cluster.py:schedule_runs",
    ],
    RUNNER: [
        "pipelines/steps/deploy.py:deploy_inference_service",
        "pipelines/steps/rayjob.py:submit_rayjob",
        "pipelines/steps/rayjob.py:wait_rayjob",
    ],
}

# The expected table, written out (docs/kubernetes.md shows the same).
EXPECTED: dict[tuple[str, str], set[Grant]] = {
    MONITOR: {
        ("pipelines.kubeflow.org", "experiments", "", "create"),
        ("pipelines.kubeflow.org", "experiments", "", "list"),
        ("pipelines.kubeflow.org", "runs", "", "create"),
        ("pipelines.kubeflow.org", "runs", "", "get"),
    },
    PIPELINES: {
        ("pipelines.kubeflow.org", "experiments", "", "create"),
        ("pipelines.kubeflow.org", "experiments", "", "list"),
        ("pipelines.kubeflow.org", "runs", "", "create"),
        ("pipelines.kubeflow.org", "jobs", "", "create"),
    },
    RUNNER: {
        ("serving.kserve.io", "inferenceservices", "churn", "get"),
        ("serving.kserve.io", "inferenceservices", "churn", "patch"),
        ("ray.io", "rayjobs", "", "create"),
        ("ray.io", "rayjobs", "", "get"),
    },
}


def _calls_in_source() -> dict[str, set[str]]:
    """module:function -> cluster API methods called in it, for all of src/kubeloop."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in sorted(SRC.rglob("*.py")):
        module = str(path.relative_to(SRC))
        text = path.read_text()
        # Only modules that use a cluster client (MLflow's client has look-alike methods):
        # kfp, kubernetes, or the project's Kubernetes client factory (pipelines/_k8s.py).
        clients = ("kfp", "kubernetes", "kubeloop.pipelines._k8s")
        if not any(f"{w} {m}" in text for w in ("import", "from") for m in clients):
            continue
        tree = ast.parse(text, filename=str(path))
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ALL_METHODS
                ):
                    found[f"{module}:{func.name}"].add(node.func.attr)
    return dict(found)


def _needed(functions: list[str]) -> set[Grant]:
    grants: set[Grant] = set()
    for function in functions:
        module = function.split(":")[0]
        for method in API_CALLS[function]:
            if method in KFP_METHODS:
                grants |= {("pipelines.kubeflow.org", r, "", v) for r, v in KFP_METHODS[method]}
            else:
                group, resource, name = RESOURCE_OF_MODULE[module]
                grants.add((group, resource, name, K8S_VERBS[method]))
    return grants


def _granted(objects: list[h.Manifest]) -> dict[tuple[str, str], set[Grant]]:
    roles = {
        (o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]): o
        for o in objects
        if o["kind"] in {"Role", "ClusterRole"}
    }
    out: dict[tuple[str, str], set[Grant]] = defaultdict(set)
    for binding in objects:
        if binding["kind"] not in {"RoleBinding", "ClusterRoleBinding"}:
            continue
        ref = binding["roleRef"]
        role = roles[(ref["kind"], binding["metadata"]["namespace"], ref["name"])]
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount", subject
            for rule in role["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for name in rule.get("resourceNames") or [""]:
                            for verb in rule["verbs"]:
                                out[(subject["namespace"], subject["name"])].add(
                                    (group, resource, name, verb)
                                )
    return dict(out)


def test_api_call_table_matches_the_code() -> None:
    found = _calls_in_source()
    if not (SRC / "pipelines" / "launch" / "cluster.py").is_file():
        pytest.fail("src/kubeloop/pipelines/launch/cluster.py is missing: the table describes it")
    assert found == API_CALLS


def test_needed_permissions_are_the_expected_table() -> None:
    assert {sa: _needed(functions) for sa, functions in RUNS.items()} == EXPECTED


def test_chart_grants_exactly_the_expected_table(rendered: dict[str, list[h.Manifest]]) -> None:
    assert _granted(rendered["default"]) == EXPECTED


def test_kustomize_base_grants_the_same(built_overlays: dict[str, list[h.Manifest]]) -> None:
    assert _granted(built_overlays["base"]) == EXPECTED
    assert _granted(built_overlays["overlays/kind"]) == EXPECTED


@pytest.mark.parametrize("scenario", ["production", "minimal", "kind", "knative-canary", "canary"])
def test_other_scenarios_never_grant_more(
    scenario: str, rendered: dict[str, list[h.Manifest]]
) -> None:
    # Account names can be overridden (minimal: existing accounts); none gets more than one of
    # the expected identities.
    for account, grants in _granted(rendered[scenario]).items():
        assert any(grants <= expected for expected in EXPECTED.values()), account


def test_no_wildcards_secrets_or_cluster_scope(rendered: dict[str, list[h.Manifest]]) -> None:
    for objects in rendered.values():
        kinds = {o["kind"] for o in objects}
        assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
        for role in (o for o in objects if o["kind"] == "Role"):
            for rule in role["rules"]:
                flat = rule["apiGroups"] + rule["resources"] + rule["verbs"]
                assert "*" not in flat, role["metadata"]["name"]
                assert not {"secrets", "pods/exec", "serviceaccounts/token"} & set(
                    rule["resources"]
                )
                assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])


def test_predictor_account_has_no_rights(rendered: dict[str, list[h.Manifest]]) -> None:
    assert ("kubeloop", "kubeloop-predictor") not in _granted(rendered["default"])


def test_granted_detects_an_extra_verb(rendered: dict[str, list[h.Manifest]]) -> None:
    import copy

    objects = copy.deepcopy(rendered["default"])
    role = next(
        o for o in objects if o["kind"] == "Role" and o["metadata"]["name"].endswith("-deploy")
    )
    role["rules"][0]["verbs"].append("delete")
    assert _granted(objects) != EXPECTED


def test_staged_rollout_grants_nothing_on_the_inferenceservice(
    rendered: dict[str, list[h.Manifest]],
) -> None:
    # rollout.mode canary/shadow: promotion and rollback are writes of the registry pointer in
    # S3 (the mounted credentials file), and the runs' deploy step patches nothing; the runner
    # keeps only its RayJob rights, the predictor none.
    granted = _granted(rendered["canary"])
    assert granted[RUNNER] == {g for g in EXPECTED[RUNNER] if g[0] != "serving.kserve.io"}
    assert granted[MONITOR] == EXPECTED[MONITOR]
    assert granted[PIPELINES] == EXPECTED[PIPELINES]
    assert ("kubeloop", "kubeloop-predictor") not in granted
