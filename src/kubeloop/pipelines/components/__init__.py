"""KFP glue: the components and pipelines, thin wrappers over :mod:`kubeloop.pipelines.steps`.

:mod:`~kubeloop.pipelines.components.training` (the training pipeline's components),
:mod:`~kubeloop.pipelines.components.pipeline` (the training pipeline and its compiled YAML),
:mod:`~kubeloop.pipelines.components.batch` (batch scoring) and
:mod:`~kubeloop.pipelines.components.monitor` (the drift monitor). The only place kfp's DSL is
imported.
"""
