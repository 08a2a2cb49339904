"""KServe's gRPC and REST servers with kubeloop's surface rules.

gRPC: the same rules as :mod:`._surface` over the V2 gRPC service: versions answered from the
served version (``NOT_FOUND`` naming it otherwise), the repository RPCs refused
(``PERMISSION_DENIED``) unless ``--enable-model-repository``, server readiness false while no
model is loaded, the concurrency limit (``RESOURCE_EXHAUSTED``), and a request that is not a
valid protobuf message answered ``INVALID_ARGUMENT`` (gRPC would say ``UNKNOWN``); ``ModelInfer``
names the version that answered in the trailing metadata ``x-kubeloop-model-version`` (and in
the response's ``model_version``). REST: uvicorn
runs with the header deadline of :mod:`._slow`, and tells the model once it listens
(:meth:`~kubeloop.serving.model.BundleModel.release_forest`: work that can wait starts then).

``kserve.ModelServer`` creates its servers itself; :func:`install_servers` points it at these
subclasses before it starts.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from grpc import aio
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.rest.server import RESTServer

from kubeloop.serving._http import show
from kubeloop.serving._slow import header_deadline_protocol
from kubeloop.serving._surface import SurfaceLimits, SurfaceState

__all__ = ["VERSION_METADATA", "install_servers"]

VERSION_METADATA = "x-kubeloop-model-version"


class _Malformed:
    """What the lenient deserializer returns for bytes that are not the expected message."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError and friends: the client's bytes
            return _Malformed(exc)

    return parse


class _ValidMessages(aio.ServerInterceptor):
    """``INVALID_ARGUMENT`` for requests that do not decode; the overload limit on inference."""

    def __init__(self, policy: SurfaceState) -> None:
        self._policy = policy

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        behavior = handler.unary_unary
        method = str(handler_call_details.method).rsplit("/", 1)[-1]
        policy = self._policy

        async def checked(request: Any, context: aio.ServicerContext) -> Any:
            if isinstance(request, _Malformed):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"The {method} request is not a valid protobuf message: "
                    f"{show(str(request.error), 200)}.",
                )
            limit = policy.limits.max_concurrency
            if method != "ModelInfer" or limit <= 0:
                return await behavior(request, context)
            if policy.in_flight >= limit:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"The server is busy: {limit} requests are in flight (--max-concurrency); "
                    "retry after a second.",
                )
            policy.in_flight += 1
            try:
                return await behavior(request, context)
            finally:
                policy.in_flight -= 1

        return grpc.unary_unary_rpc_method_handler(
            checked,
            request_deserializer=_lenient(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


class _Servicer(InferenceServicer):
    """KServe's servicer with versions, readiness and the repository switch."""

    policy: SurfaceState

    async def _check_version(self, name: str, version: str, context: Any) -> None:
        model = self.policy.model
        served = model.served
        current = served.version if served is not None else None
        if version and name == model.name and version != current:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"Model {model.name!r} has no version {show(version)}; it serves version "
                f"{current!r}. Leave the version empty to use the served one.",
            )

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=bool(self.policy.model.ready))

    async def ModelReady(self, request: Any, context: Any) -> Any:
        await self._check_version(request.name, request.version, context)
        return await super().ModelReady(request, context)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        await self._check_version(request.name, request.version, context)
        response = await super().ModelMetadata(request, context)
        served = self.policy.model.served
        if request.name == self.policy.model.name and served is not None:
            response.versions.append(served.version)
        return response

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        await self._check_version(request.model_name, request.model_version, context)
        response = await super().ModelInfer(request, context)
        if response.model_version:  # the version that answered (a canary may route elsewhere)
            context.set_trailing_metadata(((VERSION_METADATA, response.model_version),))
        return response

    async def _repository(self, name: str, load: bool, context: Any) -> None:
        model = self.policy.model
        if not self.policy.limits.model_repository:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "The model-repository extension is off: this server does not load or unload "
                "models on request. Start it with --enable-model-repository to allow it.",
            )
        if name != model.name:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"Model {show(name)} does not exist; this server serves {model.name!r}.",
            )
        problem = await self.policy.load_or_unload(load)
        if problem is not None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, problem)

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        await self._repository(request.model_name, True, context)
        return pb.RepositoryModelLoadResponse(model_name=request.model_name, isLoaded=True)

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        await self._repository(request.model_name, False, context)
        return pb.RepositoryModelUnloadResponse(model_name=request.model_name, isUnloaded=True)


def install_servers(policy: SurfaceState) -> None:
    """Make ``kserve.ModelServer`` (one process) start these servers for ``policy``."""
    import kserve.model_server
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    limits: SurfaceLimits = policy.limits
    protocol = header_deadline_protocol(AutoHTTPProtocol, limits.header_timeout)

    class Servicer(_Servicer):
        pass

    Servicer.policy = policy

    class KubeloopRESTServer(RESTServer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.config.http = protocol
            server = self._server
            startup = server.startup

            async def listening(sockets: Any = None) -> None:
                await startup(sockets=sockets)
                if server.started:
                    policy.model.release_forest()

            server.startup = listening

    class KubeloopGRPCServer(GRPCServer):
        async def start(self, max_workers: int) -> None:
            servicer = Servicer(self._data_plane, self._model_repository_extension)
            self._server = aio.server(
                futures.ThreadPoolExecutor(max_workers=max_workers),
                interceptors=(_ValidMessages(policy), ExceptionToStatusInterceptor()),
                options=[
                    (f"grpc.{key}", self._kwargs[f"grpc_{key}"])
                    for key in ("max_send_message_length", "max_receive_message_length")
                    if self._kwargs.get(f"grpc_{key}") is not None
                ],
            )
            grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
                servicer, self._server
            )
            self._server.add_insecure_port(f"[::]:{self._port}")
            await self._server.start()
            await self._server.wait_for_termination()

    kserve.model_server.RESTServer = KubeloopRESTServer
    kserve.model_server.GRPCServer = KubeloopGRPCServer
