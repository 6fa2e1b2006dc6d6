"""The FastAPI application: routes under /v1, health, metrics, errors.

Every answer that is not a success is ``{"detail": "<what was wrong>"}`` with a 4xx
status (503 with Retry-After when a queue is full or a request ran out of time). The
handlers only parse, queue and answer: searching, decoding and embedding run on the
queues' threads (see :mod:`fastretrieve.serve.service`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
from contextlib import asynccontextmanager

import numpy as np
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from .. import __version__
from .batching import QueueFull
from .middleware import BodyLimit, RequestMetrics
from .schemas import (
    MAX_K,
    MAX_VECTORS,
    AddRequest,
    EmbedResponse,
    Error,
    Health,
    IdsResponse,
    IndexInfo,
    Item,
    RemoveRequest,
    SearchRequest,
    SearchResponse,
)
from .service import NoModel, RejectedInput, Service
from .store import AddVectors, RemoveIds

# The two ways to send images: one image as the raw body, or several as multipart parts
# named "images".
IMAGE_BODY = {
    "required": True,
    "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {"schema": {
            "type": "object",
            "properties": {"images": {"type": "array", "items": {"type": "string", "format": "binary"}}},
            "required": ["images"],
        }},
    },
}
ADD_IMAGES_BODY = {
    "required": True,
    "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {"schema": {
            "type": "object",
            "properties": {
                "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
                "ids": {"type": "string", "description": "JSON array of ids, one per image"},
                "metadata": {"type": "string", "description": "JSON array, one value per image"},
            },
            "required": ["images"],
        }},
    },
}


def _errors(*codes):
    return {code: {"model": Error} for code in codes}


READ_ERRORS = _errors(400, 413, 422, 503)
WRITE_ERRORS = _errors(400, 401, 403, 413, 422, 503)
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


def create_app(service: Service) -> FastAPI:
    """The ASGI application serving ``service``."""
    config = service.config
    bearer = HTTPBearer(auto_error=False, description="the write token")

    @asynccontextmanager
    async def lifespan(app):
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="fastretrieve", version=__version__, lifespan=lifespan,
        description="Exact vector search and image retrieval over one fastretrieve index.",
        openapi_url="/v1/openapi.json", docs_url="/v1/docs", redoc_url=None,
    )

    # -- errors ---------------------------------------------------------------------------

    def error(status: int, detail: str, headers=None) -> JSONResponse:
        return JSONResponse({"detail": detail}, status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, exc: RequestValidationError):
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            return error(400, f"malformed JSON: {first.get('ctx', {}).get('error', 'cannot parse')}")
        where = ".".join(str(part) for part in first.get("loc", ()))
        more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
        return error(422, f"{where}: {first.get('msg')}{more}")

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(QueueFull)
    async def overloaded(request, exc: QueueFull):
        return error(503, str(exc), {"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(RejectedInput)
    async def rejected(request, exc: RejectedInput):
        return error(422, str(exc))

    @app.exception_handler(NoModel)
    async def no_model(request, exc: NoModel):
        return error(409, str(exc))

    # -- guards ---------------------------------------------------------------------------

    def check_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)):
        if config.read_only:
            raise HTTPException(403, "this service is read-only (started with --read-only)")
        if config.token is None:
            return
        if credentials is None:
            raise HTTPException(401, "this write needs the bearer token: "
                                "send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})
        if credentials.scheme.lower() != "bearer" or not hmac.compare_digest(
            credentials.credentials.encode(), config.token.encode()
        ):
            raise HTTPException(401, "wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    async def guarded(request: Request, work):
        """Await ``work`` within the request timeout, cancelling it if the client goes."""
        task = asyncio.ensure_future(asyncio.wait_for(work, config.request_timeout_s))
        watcher = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not task.done():
            task.cancel()  # withdraws its queued item
            await asyncio.gather(task, return_exceptions=True)
            raise ClientGone()
        try:
            return task.result()
        except asyncio.TimeoutError:
            raise HTTPException(503, f"the request took longer than {config.request_timeout_s} s",
                                headers={"Retry-After": "1"}) from None

    @app.exception_handler(ClientGone)
    async def client_gone(request, exc):  # nobody reads it; logged by the metrics as 499
        return error(499, "client disconnected")

    async def read_images(request: Request) -> tuple[list[bytes], dict]:
        """The images of a request (raw body or multipart "images" parts) and its other
        multipart fields."""
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            try:
                form = await request.form(max_files=MAX_VECTORS, max_fields=16,
                                          max_part_size=config.max_body_bytes)
            except HTTPException:
                raise
            except Exception as exc:  # the multipart parser's own errors
                raise HTTPException(400, f"malformed multipart body: {exc}") from None
            images = [await part.read() for part in form.getlist("images")
                      if isinstance(part, UploadFile)]
            if not images:
                raise HTTPException(422, "no file part named 'images' in the multipart body")
            fields = {key: value for key, value in form.items() if isinstance(value, str)}
            return images, fields
        if content_type and not content_type.startswith(("application/octet-stream", "image/")):
            raise HTTPException(415, "send an image as the raw body (application/octet-stream "
                                "or image/*) or as multipart/form-data parts named 'images'")
        body = await request.body()
        if not body:
            raise HTTPException(422, "empty body: send the image's bytes")
        return [body], {}

    # -- search ---------------------------------------------------------------------------

    async def answer(distances, ids, with_metadata):
        if with_metadata:  # reading metadata waits for a write in progress: not on the loop
            return await asyncio.to_thread(neighbours, distances, ids, True)
        return neighbours(distances, ids, False)

    def neighbours(distances, ids, with_metadata):
        results = []
        for row_distances, row_ids in zip(distances, ids):
            found = row_ids >= 0
            row_ids, row_distances = row_ids[found], row_distances[found]
            values = row_distances.tolist()
            if not np.isfinite(row_distances).all():
                values = [d if math.isfinite(d) else None for d in values]
            entry = {"ids": row_ids.tolist(), "distances": values}
            if with_metadata:
                entry["metadata"] = service.index.get_metadata(row_ids.tolist()) if len(row_ids) else []
            results.append(entry)
        return {"metric": service.index.metric, "results": results}

    @app.post("/v1/search", response_class=JSONResponse, tags=["search"],
              responses={200: {"model": SearchResponse}, **READ_ERRORS})
    async def search_vectors(body: SearchRequest, request: Request):
        """The k nearest items of each query vector (exact)."""
        queries = service.query_matrix(body.vectors)
        distances, ids = await guarded(request, service.search(queries, body.k))
        return await answer(distances, ids, body.with_metadata)

    @app.post("/v1/search/image", response_class=JSONResponse, tags=["search"],
              openapi_extra={"requestBody": IMAGE_BODY},
              responses={200: {"model": SearchResponse}, **_errors(409, 415), **READ_ERRORS})
    async def search_images(request: Request, k: int = Query(10, ge=1, le=MAX_K),
                            with_metadata: bool = False):
        """The k nearest items of each image (embedded with the index's model)."""
        images, _ = await read_images(request)

        async def embed_then_search():
            vectors = await service.embed(images)
            return await service.search(vectors, k)

        distances, ids = await guarded(request, embed_then_search())
        return await answer(distances, ids, with_metadata)

    @app.post("/v1/embed", response_class=JSONResponse, tags=["embed"],
              openapi_extra={"requestBody": IMAGE_BODY},
              responses={200: {"model": EmbedResponse}, **_errors(409, 415), **READ_ERRORS})
    async def embed(request: Request):
        """Embed images with the index's model: one L2-normalised vector each."""
        images, _ = await read_images(request)
        vectors = await guarded(request, service.embed(images))
        return {"dim": int(vectors.shape[1]), "vectors": vectors.tolist()}

    # -- items ----------------------------------------------------------------------------

    @app.post("/v1/items", response_class=JSONResponse, tags=["items"],
              dependencies=[Depends(check_token)],
              responses={200: {"model": IdsResponse}, **WRITE_ERRORS})
    async def add_vectors(body: AddRequest, request: Request):
        """Add vectors (durably: logged and fsynced before the answer)."""
        vectors = service.query_matrix(body.vectors)
        return {"ids": await guarded(request, service.write(
            AddVectors(vectors, _ids(body.ids, len(vectors)), _metadata(body.metadata, len(vectors)))
        ))}

    @app.post("/v1/items/images", response_class=JSONResponse, tags=["items"],
              dependencies=[Depends(check_token)], openapi_extra={"requestBody": ADD_IMAGES_BODY},
              responses={200: {"model": IdsResponse}, **_errors(409, 415), **WRITE_ERRORS})
    async def add_images(request: Request,
                         id: int | None = Query(None, ge=0, description="raw body: the image's id"),
                         metadata: str | None = Query(None, description="raw body: JSON metadata")):
        """Add images, embedded with the index's model (durably). Multipart: parts
        "images", optional fields "ids" and "metadata" (JSON arrays)."""
        images, fields = await read_images(request)
        if fields:
            ids = _json_field(fields.get("ids"), "ids")
            values = _json_field(fields.get("metadata"), "metadata")
        else:
            ids = None if id is None else [id]
            values = None if metadata is None else [_json_field(metadata, "metadata")]

        async def embed_then_add():
            vectors = await service.embed(images)
            return await service.write(
                AddVectors(vectors, _ids(ids, len(images)), _metadata(values, len(images)))
            )

        return {"ids": await guarded(request, embed_then_add())}

    @app.post("/v1/items/remove", response_class=JSONResponse, tags=["items"],
              dependencies=[Depends(check_token)],
              responses={200: {"model": IdsResponse}, **_errors(404), **WRITE_ERRORS})
    async def remove_items(body: RemoveRequest, request: Request):
        """Remove items by id (durably): all of them, or none when one is unknown."""
        ids = _ids(body.ids, len(body.ids))
        return {"ids": await guarded(request, service.write(RemoveIds(ids)))}

    @app.delete("/v1/items/{item_id}", response_class=JSONResponse, tags=["items"],
                dependencies=[Depends(check_token)],
                responses={200: {"model": IdsResponse}, **_errors(404), **WRITE_ERRORS})
    async def remove_item(request: Request, item_id: int = Path(ge=0, le=2**63 - 1)):
        """Remove one item (durably)."""
        return {"ids": await guarded(request, service.write(RemoveIds([item_id])))}

    @app.get("/v1/items/{item_id}", response_class=JSONResponse, tags=["items"],
             responses={200: {"model": Item}, **_errors(404, 422)})
    async def get_item(item_id: int = Path(ge=0, le=2**63 - 1)):
        """One item's vector and metadata."""
        def read():
            return service.index.get(item_id), service.index.get_metadata(item_id)

        vector, metadata = await asyncio.to_thread(read)
        return {"id": item_id, "vector": vector.tolist(), "metadata": metadata}

    @app.exception_handler(KeyError)
    async def unknown_id(request, exc: KeyError):
        return error(404, str(exc.args[0]) if exc.args else "unknown id")

    @app.get("/v1/index", response_class=JSONResponse, tags=["service"],
             responses={200: {"model": IndexInfo}})
    async def index_info():
        """What the service holds and how it is configured."""
        index = service.index
        return {"count": len(index), "dim": index.dim, "metric": index.metric,
                "dtype": index.dtype, "model": service.model, "read_only": config.read_only,
                "writes_need_token": config.token is not None}

    # -- operations -----------------------------------------------------------------------

    @app.get("/healthz", response_class=JSONResponse, tags=["service"],
             responses={200: {"model": Health}})
    async def healthz():
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", response_class=JSONResponse, tags=["service"],
             responses={200: {"model": Health}, 503: {"model": Health, "headers": RETRY_AFTER}})
    async def readyz():
        """Readiness: the index is loaded, the log replayed, and not shutting down."""
        if not service.ready:
            return JSONResponse({"status": "unavailable"}, 503, headers={"Retry-After": "1"})
        return {"status": "ready"}

    @app.get("/metrics", response_class=PlainTextResponse, tags=["service"],
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def metrics():
        """Prometheus text format: requests, latencies, batch sizes, queue depths, errors."""
        return PlainTextResponse(service.metrics.render(),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    # The body limit is outermost, so an oversized body is refused before it is read.
    app.add_middleware(RequestMetrics, metrics=service.metrics)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    return app


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _ids(ids, count):
    if ids is None:
        return None
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise RejectedInput("ids must be a JSON array of integers")
    if len(ids) != count:
        raise RejectedInput(f"ids has {len(ids)} entries for {count} items")
    if any(not 0 <= i < 2**63 for i in ids):
        raise RejectedInput("ids must be between 0 and 2^63 - 1")
    if len(set(ids)) != len(ids):
        raise RejectedInput("ids must not repeat")
    return np.asarray(ids, np.int64)


def _metadata(values, count):
    if values is None:
        return None
    if not isinstance(values, list) or len(values) != count:
        raise RejectedInput(f"metadata must be a JSON array with one value per item ({count})")
    try:
        json.dumps(values, allow_nan=False)
    except ValueError:
        raise RejectedInput("metadata must not hold NaN or infinities") from None
    return values


def _json_field(text, name):
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RejectedInput(f"{name} is not valid JSON: {exc}") from None
