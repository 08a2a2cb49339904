"""Feature prep: a scikit-learn ``ColumnTransformer`` to fit, a numpy fast path to serve.

Numerics are median-imputed then standardised; categorical and binary features are
most-frequent-imputed then one-hot encoded, unseen categories becoming all-zero rows (scikit-learn's
``handle_unknown="ignore"``). Output columns: numerics first, then ``"<feature>=<category>"``, each
group in schema order.

The fitted transformer is exported as a :class:`~kubeloop.bundle.preprocessor.PreprocessorSpec`
(the bundle's ``preprocessor.json``: plain data, no pickle) and :class:`FastTransform` applies
it with numpy alone. scikit-learn is imported lazily inside the fit functions so that a model
server, which only needs the fast path, never pays for importing it.

Its parts: ``_fit`` (building and fitting the scikit-learn transformer) and ``_fast`` (the numpy
fast path).
"""

from kubeloop.features._fast import FastTransform, TransformResult
from kubeloop.features._fit import build_column_transformer, fit_preprocessor, preprocessor_spec

__all__ = [
    "FastTransform",
    "TransformResult",
    "build_column_transformer",
    "fit_preprocessor",
    "preprocessor_spec",
]
