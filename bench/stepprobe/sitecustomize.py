"""Step probe: loaded at start-up by every Python whose ``PYTHONPATH`` names this directory.

``bench/steps.py --run`` and the local pipeline test put it on the ``PYTHONPATH`` of
``kfp.local``'s step processes with ``KUBELOOP_STEP_PROBE=<file>``: when a KFP step process
(``kfp.dsl.executor_main ... --function_to_execute NAME``) exits, it appends one JSON line to that
file: the step's name, the seconds it ran and the heavy libraries it had loaded by then.
Standard library only; it does nothing in any other process.
"""

import atexit
import json
import os
import sys
import time

_STARTED = time.time()
_OUT = os.environ.get("KUBELOOP_STEP_PROBE")
HEAVY = ("pandas", "pyarrow", "sklearn", "scipy", "xgboost", "ray", "mlflow", "numba", "matplotlib")


def _report() -> None:
    if "--function_to_execute" not in sys.argv[:-1] or not _OUT:
        return
    name = sys.argv[sys.argv.index("--function_to_execute") + 1]
    loaded = {module.split(".")[0] for module in sys.modules}
    line = {"step": name, "seconds": time.time() - _STARTED, "heavy": sorted(loaded & set(HEAVY))}
    with open(_OUT, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")


if _OUT:
    atexit.register(_report)
