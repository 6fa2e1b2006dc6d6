"""``fastretrieve serve``: an HTTP service for exact search and image embedding over
one index, with dynamic batching and durable writes (FastAPI + uvicorn, the ``serve``
extra).

Public entry points: :func:`serve` (run it in the foreground), :func:`build_service`
and :func:`create_app` (the ASGI app, e.g. for another ASGI server), and
:class:`ServeConfig`. One concern per module: ``config`` (what the operator decides),
``batching`` (the queues), ``wal`` (the write-ahead log), ``store`` (the index with its
log), ``service`` (the batched work), ``app`` (routes), ``schemas``, ``middleware``,
``metrics``, ``server`` (start and stop).

This package uses only the library's public names; the library never imports it.
"""

from .app import create_app
from .batching import BatchSettings
from .config import ConfigError, ServeConfig
from .server import build_service, serve

__all__ = ["BatchSettings", "ConfigError", "ServeConfig", "build_service", "create_app", "serve"]
