"""Cold start: what the server process imports, and the compiled forest off the ready path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest

from kubeloop.bundle import load_bundle
from kubeloop.serving import BundleModel
from tests.waiting import wait_for

from ._grpc_raw import call, infer_request
from .conftest import Server, free_port
from .test_protocols import ROWS, v2_body

pytestmark = pytest.mark.integration

# Libraries the model server must not load (scikit-learn is installed in this environment, and
# pandas, Ray, MLflow, KFP, matplotlib and the Kubernetes client too).
FORBIDDEN = ("pandas", "sklearn", "ray", "mlflow", "kfp", "matplotlib", "kubernetes")

# The `kubeloop` console script, with sys.modules written to a file when the process exits.
_SERVE_AND_RECORD = """
import atexit, json, sys
from kubeloop.cli import main

def record():
    with open({out!r}, "w") as handle:
        json.dump(sorted(sys.modules), handle)

atexit.register(record)
sys.argv = ["kubeloop", "serve", *{args!r}]
sys.exit(main())
"""


# Everything the server runs, after KServe's pandas imports and with pandas and scikit-learn
# made unimportable (argv: the bundle, the rows).
_WITHOUT_PANDAS = """
import json, sys
from kubeloop.serving.imports import slim_server_imports

slim_server_imports()
sys.modules["pandas"] = sys.modules["sklearn"] = None  # any import of them now fails
from pathlib import Path

from kubeloop.cli._serve import build_serve_parser
from kubeloop.serving import BundleModel
from kubeloop.serving._swap import ChampionWatcher
from kubeloop.serving.explain import explainer_of

build_serve_parser()
bundle, rows = Path(sys.argv[1]), {"instances": json.loads(sys.argv[2])}
model = BundleModel("churn", lambda: bundle)
model.load()
served = model.served
assert served.compile_forest(), "the forest did not compile"
assert len(model.predict(rows)["predictions"]) == len(rows["instances"])
assert model.explain(rows)["explanations"]
assert explainer_of(served) is not None and ChampionWatcher is not None
print("served without pandas and scikit-learn")
"""


def _loaded(modules: list[str], library: str) -> list[str]:
    """``library``'s modules among ``modules``. A module that only stands in for pandas until
    something uses it is ``pandas`` alone: pandas itself loads ``pandas.core`` and the rest."""
    found = [name for name in modules if name == library or name.startswith(f"{library}.")]
    return [] if found == ["pandas"] and library == "pandas" else found


def test_server_process_loads_no_training_or_cluster_library(
    small_bundle: Path, tmp_path: Path
) -> None:
    """The real ``kubeloop serve`` process, through start, V1, V2 REST, gRPC and explain
    requests and shutdown, never loads pandas, scikit-learn, Ray, MLflow, KFP, matplotlib or the
    Kubernetes client."""
    numeric = set(load_bundle(small_bundle).schema.numeric_features)
    out, log = tmp_path / "modules.json", tmp_path / "server.log"
    http_port, grpc_port = free_port(), free_port()
    args = ["--model-dir", str(small_bundle), "--http-port", str(http_port)]
    args += ["--grpc-port", str(grpc_port)]
    script = _SERVE_AND_RECORD.format(out=str(out), args=args)
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-c", script], stdout=handle, stderr=subprocess.STDOUT
        )
    server = Server(process, http_port, grpc_port, "churn", log)
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"server exited with {process.returncode}: {log.read_text()}")
            try:
                return httpx.get(f"{server.url}/v2/models/churn/ready", timeout=2).is_success
            except httpx.TransportError:
                return False

        wait_for(ready, what="the model to be ready", timeout=300, every=0.1)
        v1 = httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": ROWS})
        assert v1.status_code == 200, v1.text
        v2 = httpx.post(f"{server.url}/v2/models/churn/infer", json=v2_body(ROWS, numeric))
        assert v2.status_code == 200, v2.text
        status, details, _ = call(server.grpc_url, "ModelInfer", infer_request(ROWS[0], numeric))
        assert status == grpc.StatusCode.OK, details
        explained = httpx.post(f"{server.url}/v1/models/churn:explain", json={"instances": ROWS})
        assert explained.status_code == 200, explained.text
    finally:
        assert server.stop() == 0, log.read_text()[-4000:]
    modules = json.loads(out.read_text())
    assert "kubeloop.serving" in modules and "xgboost" in modules  # the record is of a server
    loaded = {library: _loaded(modules, library) for library in FORBIDDEN}
    assert not any(loaded.values()), {k: v[:5] for k, v in loaded.items() if v}


def test_kubeloop_serving_code_imports_no_pandas_or_sklearn(small_bundle: Path) -> None:
    """With KServe's own pandas imports served by the stand-in, pandas and scikit-learn are then
    made unimportable: everything kubeloop's server runs (the CLI, a bundle's load and
    verification, the compiled forest, explanations, the registry's watcher) still works."""
    completed = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PANDAS, str(small_bundle), json.dumps(ROWS)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "served without pandas and scikit-learn" in completed.stdout


def test_forest_compiles_only_once_released(small_bundle: Path) -> None:
    """A held model serves through XGBoost until released; then its trees are compiled."""
    model = BundleModel("churn", lambda: small_bundle, hold_forest=True)
    assert model.load()
    served = model.served
    assert served is not None
    before = model.predict({"instances": ROWS})
    assert served.forest is None  # held: nothing compiles before the server listens
    model.release_forest()
    wait_for(lambda: served.forest is not None, what="the forest to compile", timeout=300)
    assert model.served is served  # the same bundle's request path, now with its forest
    after = model.predict({"instances": ROWS})
    assert [p["probability"] for p in after["predictions"]] == pytest.approx(
        [p["probability"] for p in before["predictions"]], abs=1e-5
    )


# After slim_server_imports(): KServe's package and pandas still work for code that uses them.
_STILL_THERE = """
import sys
from kubeloop.serving.imports import slim_server_imports

slim_server_imports()
import kserve
from kserve.protocol.infer_type import InferInput, InferRequest

assert "kubernetes" not in sys.modules and "pandas.core" not in sys.modules
request = InferRequest("m", [InferInput("x", [2], "FP64", [1.0, 2.0])])
frame = request.as_dataframe()  # KServe's DataFrame helper: pandas is loaded now
assert frame["x"].tolist() == [1.0, 2.0] and "pandas.core" in sys.modules
import pandas

assert pandas.DataFrame is type(frame)
from kserve import KServeClient, Model  # names of KServe's own __init__: it runs now

assert Model is kserve.model.Model and "kubernetes" in sys.modules
print("kserve and pandas as usual")
"""


def test_kserve_and_pandas_work_as_usual_after_the_slim_imports() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", _STILL_THERE], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "kserve and pandas as usual" in completed.stdout
