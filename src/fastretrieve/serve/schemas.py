"""Request and response bodies of the HTTP API (the OpenAPI document is built from
them)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Limits the schema states, so that clients (and the fuzzer) know them.
MAX_K = 10_000
MAX_VECTORS = 1024
MAX_IDS = 10_000

Vector = list[float]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchRequest(_Strict):
    """Query vectors (each of the index's dimension) and how many neighbours to return."""

    vectors: list[Vector] = Field(min_length=1, max_length=MAX_VECTORS)
    k: int = Field(10, ge=1, le=MAX_K)
    with_metadata: bool = False


class Neighbours(BaseModel):
    """One query's neighbours, best first (fewer than k when the index holds fewer)."""

    ids: list[int]
    distances: list[float | None] = Field(
        description="l2: squared distance; ip: inner product; cosine: cosine similarity. "
        "null where float32 overflows."
    )
    metadata: list[Any] | None = None


class SearchResponse(BaseModel):
    """One entry per query vector or image, in order."""

    metric: str
    results: list[Neighbours]


class EmbedResponse(BaseModel):
    """L2-normalised vectors, one per image, in order."""

    dim: int
    vectors: list[Vector]


class AddRequest(_Strict):
    """Vectors to add, with optional ids (new ids are assigned when omitted; an id already
    present is replaced) and optional metadata (one JSON value per vector)."""

    vectors: list[Vector] = Field(min_length=1, max_length=MAX_VECTORS)
    ids: list[int] | None = Field(None, max_length=MAX_VECTORS)
    metadata: list[Any] | None = Field(None, max_length=MAX_VECTORS)


class IdsResponse(BaseModel):
    """The ids written (added, or removed), in order."""

    ids: list[int]


class RemoveRequest(_Strict):
    """Ids to remove: all of them, or none when one is unknown (404)."""

    ids: list[int] = Field(min_length=1, max_length=MAX_IDS)


class Item(BaseModel):
    """A stored item: its vector (as stored: normalised for cosine) and metadata."""

    id: int
    vector: Vector
    metadata: Any = None


class IndexInfo(BaseModel):
    """What the service holds and how it is configured."""

    count: int
    dim: int
    metric: str
    dtype: str
    model: str | None
    read_only: bool
    writes_need_token: bool


class Health(BaseModel):
    """Liveness or readiness."""

    status: str


class Error(BaseModel):
    """Every error answer: a message that says what was wrong."""

    detail: str
