"""Benchmark: what each pipeline step imports, and how long that takes.

``kfp.local`` (and KFP on a cluster) starts a new Python for every step: ``_KFP_RUNTIME=true
python -m kfp.dsl.executor_main`` loads the component's source, whose header is KFP's own
(``import kfp``, ``from kfp.dsl import *``...; with ``_KFP_RUNTIME=true`` KFP leaves out its
client and compiler), then the step function runs its imports. This runs that header
once in a fresh process, then forks one child per step that runs the step function's own import
statements (read from its source) and reports the seconds they took and the heavy libraries
loaded afterwards.

The step functions import the pipeline cores, which import the rest when they run; ``--run``
therefore also runs the whole pipeline once through ``kfp.local`` (``workers=auto``, a fresh
kubeloop home) with the step probe (``bench/stepprobe/sitecustomize.py``) on the steps'
``PYTHONPATH``, and prints each step process's wall time and the heavy libraries it had loaded
when it exited. ``tests/integration/pipelines/test_local_pipeline.py`` checks the same probe.

Usage::

    .venv/bin/python bench/steps.py [--json] [--run DATA --target COL]
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

PROBE_DIR = Path(__file__).resolve().parent / "stepprobe"
# Libraries worth naming (each costs a noticeable share of a second, or more, to import): the
# probe's own list.
_spec = importlib.util.spec_from_file_location("step_probe", PROBE_DIR / "sitecustomize.py")
assert _spec is not None and _spec.loader is not None
_probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_probe)
HEAVY: tuple[str, ...] = _probe.HEAVY
_PROBE_ENV = "KUBELOOP_STEP_PROBE"
KFP_HEADER = "import kfp\nfrom kfp import dsl\nfrom kfp.dsl import *\nfrom typing import *\n"


def step_imports() -> dict[str, str]:
    """Step name -> the import statements of its component function's body."""
    from kubeloop.pipelines.components.training import build_components

    found = {}
    for name, component in build_components().items():
        function = component.python_func
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
        body = tree.body[0]
        assert isinstance(body, ast.FunctionDef)
        imports = [n for n in ast.walk(body) if isinstance(n, ast.Import | ast.ImportFrom)]
        found[name] = "\n".join(ast.unparse(node) for node in imports)
    return found


def _heavy() -> list[str]:
    return sorted({name.split(".")[0] for name in sys.modules} & set(HEAVY))


def measure(steps: dict[str, str]) -> dict[str, Any]:
    """Run KFP's header, then each step's imports in a forked child of that process."""
    start = time.perf_counter()
    exec(KFP_HEADER, {})  # what every step's program starts with
    import kfp.dsl.executor_main  # noqa: F401 -- the step process's main module

    result: dict[str, Any] = {"header_s": time.perf_counter() - start, "steps": {}}
    for name, source in steps.items():
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: one step's imports, then report and leave at once
            os.close(read)
            began = time.perf_counter()
            exec(source, {})
            report = {"import_s": time.perf_counter() - began, "heavy": _heavy()}
            os.write(write, json.dumps(report).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as handle:
            text = handle.read()
        os.waitpid(pid, 0)
        result["steps"][name] = json.loads(text)
    return result


def run_pipeline(data: str, target: str) -> tuple[float, list[dict[str, Any]]]:
    """Run the pipeline once with the step probe; (seconds, one probe record per step)."""
    from kubeloop.pipelines.launch.request import RunRequest
    from kubeloop.pipelines.launch.runs import start_training_run

    with tempfile.TemporaryDirectory(prefix="kubeloop-bench-steps-") as home:
        probe = Path(home) / "steps.jsonl"
        saved = {k: os.environ.get(k) for k in ("KUBELOOP_HOME", "PYTHONPATH", _PROBE_ENV)}
        paths = [str(PROBE_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
        os.environ.update(
            KUBELOOP_HOME=home, PYTHONPATH=os.pathsep.join(paths), **{_PROBE_ENV: str(probe)}
        )
        try:
            started = time.perf_counter()
            start_training_run(
                RunRequest(data=os.path.abspath(data), target=target, model_name="bench")
            )
            seconds = time.perf_counter() - started
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        records = [json.loads(line) for line in probe.read_text().splitlines()]
    return seconds, records


def main(argv: list[str] | None = None) -> int:
    """Print each step's import time and heavy libraries (and, with ``--run``, run times)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--run", metavar="DATA", help="also run the pipeline on this data")
    parser.add_argument("--target", help="the target column of --run's data")
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:  # the fresh process: step imports on stdin, measurements on stdout
        print(json.dumps(measure(json.loads(sys.stdin.read()))))
        return 0
    if args.run and not args.target:
        parser.error("--run needs --target COL")
    # Finding the imports loads kfp and kubeloop here; the measuring process starts fresh.
    probe = subprocess.run(
        [sys.executable, __file__, "--probe"],
        env={**os.environ, "_KFP_RUNTIME": "true"},  # as the step's command sets it
        input=json.dumps(step_imports()),
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(probe.stdout)
    if args.run:
        from kubeloop.training.engine import short_openmp_spin

        short_openmp_spin()  # what `kubeloop pipeline run` sets for its steps
        result["run_s"], result["run"] = run_pipeline(args.run, args.target)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"KFP header (every step): {result['header_s']:.2f} s")
    print("step              imports  heavy libraries after the step function's imports")
    for name, step in result["steps"].items():
        print(f"{name:16s} {step['import_s']:5.2f} s  {', '.join(step['heavy']) or '-'}")
    if args.run:
        print(f"\npipeline run (kfp.local, workers=auto): {result['run_s']:.1f} s")
        print("step              process  heavy libraries loaded when the step process exited")
        for record in result["run"]:
            heavy = ", ".join(record["heavy"]) or "-"
            print(f"{record['step']:16s} {record['seconds']:5.2f} s  {heavy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
