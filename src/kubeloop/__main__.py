"""``python -m kubeloop`` runs the command line."""

from kubeloop.cli import run

run()
