"""``kubeloop explain``: the server's ``:explain`` answer for the rows of a file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``explain`` sub-command."""
    parser = subparsers.add_parser(
        "explain",
        help="per-feature contributions (TreeSHAP / linear terms) for the rows of a file",
        description=(
            "Explain every row of a CSV/Parquet file with a model bundle: one contribution per "
            "input feature in the model's margin space, plus the bias, the margin and the "
            "probability (prediction for regression). Prints the same JSON as the server's "
            "POST /v1/models/{name}:explain. Rows the server would refuse are reported on "
            "standard error with the server's message and left out."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", type=Path, help="the bundle directory")
    source.add_argument("--registry", help="registry root (path or URL): the champion")
    parser.add_argument("--model", help="model name inside the registry (with --registry)")
    parser.add_argument("--data", required=True, help="rows to explain (.csv/.parquet)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here (not stdout)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import orjson

    from kubeloop.batch._score import explain_table

    document, refused = explain_table(
        args.data, model_dir=args.model_dir, registry=args.registry, model=args.model
    )
    for row, reason in refused:
        print(f"row {row} refused: {reason}", file=sys.stderr)
    text = orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
