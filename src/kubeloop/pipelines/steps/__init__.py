"""Step logic: what each pipeline step does, as plain functions over directories.

One module per step: :mod:`~kubeloop.pipelines.steps.data` (ingest + validate, feature prep),
:mod:`~kubeloop.pipelines.steps.train` (every candidate, here or on a KubeRay RayJob:
:mod:`~kubeloop.pipelines.steps.rayjob`),
:mod:`~kubeloop.pipelines.steps.evaluate` (test metrics, bundle, report),
:mod:`~kubeloop.pipelines.steps.gate` (champion vs challenger; MLflow run, register) and
:mod:`~kubeloop.pipelines.steps.deploy` (the InferenceService). No kfp here: the KFP
components (:mod:`kubeloop.pipelines.components`) only hand these functions artifact paths.
"""
