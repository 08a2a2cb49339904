"""Launchers: where a pipeline run goes and how it is started and followed.

:mod:`~kubeloop.pipelines.launch.runs` (the one entry point: :func:`start_training_run`),
:mod:`~kubeloop.pipelines.launch.request` (what a run needs, checked once: ``RunRequest``),
:mod:`~kubeloop.pipelines.launch.local` (``kfp.local``) and
:mod:`~kubeloop.pipelines.launch.cluster` (a KFP API server: submit, schedule, follow).
"""
