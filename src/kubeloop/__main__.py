"""``python -m kubeloop`` runs the command line."""

import sys

from kubeloop.cli import main

sys.exit(main())
