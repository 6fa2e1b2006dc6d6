"""Starting the service: load the index (replaying its log), load the model, bind the
address, serve with uvicorn until SIGTERM or SIGINT.

On SIGTERM uvicorn stops accepting connections and waits (up to the shutdown timeout)
for the requests in flight to be answered; then the queues are drained, the log is
compacted into the index file by its atomic save, and the process exits.
"""

from __future__ import annotations

import logging
import socket

from .. import Embedder
from ..embed import Whitening
from .config import MODEL_ATTRIBUTE, ServeConfig, model_to_serve
from .store import ServedIndex

log = logging.getLogger("fastretrieve.serve")


def build_service(config: ServeConfig):
    """The `Service` for ``config``: index loaded and log replayed, model loaded."""
    from .service import Service

    config.check()
    store = ServedIndex(config.index_path, read_only=config.read_only)
    model, fingerprint = model_to_serve(store.index.attributes, config.model)
    embedder = whitening = None
    if model is not None:
        options = {} if config.max_image_pixels is None else {"max_pixels": config.max_image_pixels}
        embedder = Embedder(model, progress=False, **options)
        if fingerprint is not None and embedder.fingerprint != fingerprint:
            raise ValueError(
                f"model {model!r} does not produce the vectors of {config.index_path} "
                "(its fingerprint differs from the one recorded in the index)"
            )
        # An index whitened by `fastretrieve fit-whitening` holds whitened vectors: every
        # embedded image goes through the same transform before it is searched or stored.
        record = store.index.attributes.get(MODEL_ATTRIBUTE)
        if isinstance(record, dict) and record.get("whitening") is not None:
            whitening = Whitening.from_record(record["whitening"])
        dim = whitening.dim if whitening is not None else embedder.dim
        if dim != store.index.dim:
            raise ValueError(f"model {model!r} makes {dim}-d vectors; the index holds "
                             f"{store.index.dim}-d vectors")
    return Service(config, store, embedder, model, whitening)


def serve(config: ServeConfig) -> int:
    """Run the service in the foreground until SIGTERM/SIGINT; returns the exit code.

    Prints ``listening on http://HOST:PORT`` on stdout once the socket is bound (with
    ``port=0``, the port the system chose)."""
    import uvicorn

    from .app import create_app

    logging.basicConfig(level=logging.INFO, format="fastretrieve serve: %(message)s")
    service = build_service(config)
    if service.store.replayed:
        log.info("replayed %d logged writes", service.store.replayed)
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, config.port))
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn.Config(
        create_app(service), log_level="warning", access_log=False,
        timeout_graceful_shutdown=config.shutdown_timeout_s,
    ))
    address = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"listening on http://{address}:{port}", flush=True)
    if config.token is None and not config.read_only:
        log.warning("writes are open to anyone who can reach %s (no token set)", address)
    server.run(sockets=[sock])
    return 0 if server.started else 3
