"""What the model server process imports, kept to what it uses (a pod's cold start).

kubeloop's own serving code imports no pandas, scikit-learn, Ray, MLflow, KFP or matplotlib. Its
libraries import more than serving needs, at ``import`` time:

- ``kserve``: its package ``__init__`` imports the Kubernetes client, KServe's API client and a
  hundred-odd resource classes (about a third of a second) before any submodule can load. The
  package is registered with its ``__init__`` deferred: submodules (``kserve.model``,
  ``kserve.model_server``, ...) import as usual, and the ``__init__`` runs the first time a
  name only it defines is asked for (``kserve.Model``, ``from kserve import KServeClient``).
- ``kserve.protocol.infer_type`` and ``kserve.utils.utils`` (KServe's request types, which
  everything of KServe's data plane imports) import pandas for ``InferRequest.as_dataframe()``
  and helpers of KServe's own predictors, and name ``pd.DataFrame`` in annotations, which Python
  evaluates when the function is defined. These two modules are compiled with postponed
  annotations (``from __future__ import annotations``: the annotations stay strings), and the
  pandas they import is a stand-in that imports pandas the first time anything uses it, which
  kubeloop's request path never does.
- ``xgboost``: ``xgboost.compat`` imports scikit-learn whenever it is installed (half a second)
  for its scikit-learn estimator classes, which the server never uses: XGBoost is imported
  with scikit-learn hidden. The serving image does not install scikit-learn at all.

:func:`slim_server_imports` does all three. Only for a process that is the model server (the
``kubeloop serve`` command), before anything of KServe or XGBoost is imported: in any other
process XGBoost's estimator classes would lack scikit-learn's bases.
"""

from __future__ import annotations
import __future__

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Sequence
from types import CodeType, ModuleType
from typing import Any

__all__ = ["PANDAS_IMPORTERS", "slim_server_imports"]

# KServe's modules that import pandas at the top (for code kubeloop never calls).
PANDAS_IMPORTERS = ("kserve.protocol.infer_type", "kserve.utils.utils")


def slim_server_imports() -> None:
    """Set up this process's imports as the module docstring says (idempotent)."""
    _defer_kserve_init()
    if "pandas" not in sys.modules and not any(name in sys.modules for name in PANDAS_IMPORTERS):
        _pandas_on_first_use()
        finder = _PostponedAnnotationsFinder()
        sys.meta_path.insert(0, finder)
        try:
            for name in PANDAS_IMPORTERS:
                importlib.import_module(name)
        finally:
            sys.meta_path.remove(finder)
    _import_xgboost_without_sklearn()


def _defer_kserve_init() -> None:
    """Register the ``kserve`` package with its ``__init__`` deferred; nothing when KServe is
    imported already or not installed."""
    if "kserve" in sys.modules:
        return
    spec = importlib.util.find_spec("kserve")
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return
    package = importlib.util.module_from_spec(spec)

    def first_use(name: str) -> Any:
        if name.startswith("__"):  # dunder probes (copy, pickle, inspect): no init for them
            raise AttributeError(name)
        if importlib.util.find_spec(f"kserve.{name}") is not None:
            return importlib.import_module(f"kserve.{name}")  # a submodule: just that
        del package.__dict__["__getattr__"]  # any other name: run the real __init__, once
        loader = spec.loader
        assert loader is not None
        loader.exec_module(package)
        return getattr(package, name)

    package.__dict__["__getattr__"] = first_use
    sys.modules["kserve"] = package


class _PostponedAnnotations(importlib.machinery.SourceFileLoader):
    """Compile the module as if it began with ``from __future__ import annotations`` (always
    from source: the cached bytecode evaluates its annotations)."""

    def get_code(self, fullname: str) -> CodeType:
        source = self.get_data(self.path)
        flags = __future__.annotations.compiler_flag
        return compile(source, self.path, "exec", flags=flags, dont_inherit=True)


class _PostponedAnnotationsFinder(importlib.abc.MetaPathFinder):
    """:data:`PANDAS_IMPORTERS` compiled with postponed annotations."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in PANDAS_IMPORTERS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            spec.loader = _PostponedAnnotations(fullname, spec.loader.path)
        return spec


def _pandas_on_first_use() -> None:
    """Put a stand-in for pandas in ``sys.modules``: the first attribute asked of it that it
    lacks imports pandas (which then replaces it there), and every attribute is read from pandas
    from then on. The stand-in carries pandas' spec, so ``import pandas`` returns it as it is."""
    spec = importlib.util.find_spec("pandas")
    if spec is None:
        return
    stand_in = ModuleType("pandas")
    stand_in.__spec__ = spec
    lock = threading.Lock()

    def first_use(name: str) -> Any:
        with lock:
            if sys.modules.get("pandas") is stand_in:
                del sys.modules["pandas"]
            pandas = importlib.import_module("pandas")
        return getattr(pandas, name)

    stand_in.__dict__["__getattr__"] = first_use
    sys.modules["pandas"] = stand_in


def _import_xgboost_without_sklearn() -> None:
    """Import XGBoost with scikit-learn hidden from it (``sys.modules`` entry ``None``: its
    ``import sklearn`` raises ``ImportError``, and ``xgboost.compat`` goes without)."""
    if "xgboost" in sys.modules or "sklearn" in sys.modules:
        return
    sys.modules["sklearn"] = None  # type: ignore[assignment]
    try:
        importlib.import_module("xgboost")
    finally:
        del sys.modules["sklearn"]
