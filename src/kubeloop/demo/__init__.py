"""``kubeloop demo``: the whole closed loop on one machine.

:mod:`kubeloop.demo.story` tells the story (train, serve, traffic, drift, retrain, promote);
:mod:`kubeloop.demo.harness` holds what it drives a local loop with -- the model server as a
child process, traffic, drifted data, free ports -- public, so tests and benchmarks use the same.
"""

from typing import TYPE_CHECKING

from kubeloop import lazy_exports

if TYPE_CHECKING:
    from kubeloop.demo.story import DemoConfig, run_demo

__all__ = ["DemoConfig", "run_demo"]


# The story imports pandas and the pipelines; the harness alone does not need them.
__getattr__ = lazy_exports(__name__, dict.fromkeys(__all__, "story"))
