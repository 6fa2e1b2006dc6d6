"""``fastretrieve serve``: run the HTTP service over an index (the ``serve`` extra)."""

from __future__ import annotations

from pathlib import Path

from .errors import CommandError, UsageError

EXAMPLES = """\
examples:
  fastretrieve serve photos.fri                        # http://127.0.0.1:8000/v1/docs
  fastretrieve serve photos.fri --read-only --host 0.0.0.0
  FASTRETRIEVE_TOKEN=$(cat token) fastretrieve serve photos.fri --host 0.0.0.0

Writes need `Authorization: Bearer TOKEN` when a token is set ($FASTRETRIEVE_TOKEN or
--token-file); on an address other than loopback the service refuses to start with
writes enabled and no token. SIGTERM stops accepting, answers the requests in flight and
saves the index.
"""


def add_parser(add_command) -> None:
    """Register the ``serve`` command."""
    parser = add_command(
        "serve", help="serve an index over HTTP",
        description="Serve search, embedding and durable writes over one index "
        "(FastAPI + uvicorn; pip install 'fastretrieve[serve]').",
        epilog=EXAMPLES,
    )
    parser.add_argument("index", metavar="INDEX")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port (printed)")
    parser.add_argument("--model", help="built-in model name or local .onnx file (default: the "
                        "model recorded in the index, when built in)")
    parser.add_argument("--read-only", action="store_true", help="refuse every write")
    parser.add_argument("--token-file", help="file holding the write token "
                        "(default: $FASTRETRIEVE_TOKEN)")
    parser.add_argument("--max-batch", type=int, help="most query vectors per batched search")
    parser.add_argument("--max-wait-ms", type=float, help="longest wait for a search batch to fill")
    parser.add_argument("--search-workers", type=int, help="batched searches at once (default 1)")
    parser.add_argument("--max-queued", type=int,
                        help="most query rows waiting to be searched; beyond, 503 (default 4096)")
    parser.add_argument("--max-body-mb", type=float, default=32.0)
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request seconds")
    parser.add_argument("--compact-interval", type=float, default=60.0,
                        help="seconds between compactions of the write-ahead log")
    parser.set_defaults(run=run)


def run(args) -> int:
    """Run ``fastretrieve serve`` until SIGTERM or Ctrl-C."""
    try:
        from ..serve import ConfigError, ServeConfig, serve
        from ..serve.config import DEFAULT_SEARCH, read_token
    except ImportError as error:
        raise CommandError(f"the service needs the serve extra (pip install 'fastretrieve[serve]'): "
                           f"{error}") from None
    from dataclasses import replace

    if not Path(args.index).is_file():
        raise CommandError(f"{args.index}: no such index")
    search = DEFAULT_SEARCH
    if args.max_batch is not None:
        search = replace(search, max_batch=args.max_batch)
    if args.max_wait_ms is not None:
        search = replace(search, max_wait_s=args.max_wait_ms / 1000)
    if args.search_workers is not None:
        search = replace(search, workers=args.search_workers)
    if args.max_queued is not None:
        search = replace(search, max_pending=args.max_queued)
    try:
        config = ServeConfig(
            Path(args.index), host=args.host, port=args.port, model=args.model,
            read_only=args.read_only, token=read_token(args.token_file), search=search,
            max_body_bytes=int(args.max_body_mb * 2**20), request_timeout_s=args.timeout,
            compact_interval_s=args.compact_interval,
        )
        config.check()
    except ConfigError as error:
        raise UsageError(str(error)) from None
    return serve(config)
