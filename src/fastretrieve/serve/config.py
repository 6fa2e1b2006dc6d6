"""What the operator decides when starting the service (never a request): the index,
the address, the model, the write token, batching and limits.

Security rules enforced here, before anything listens:

- writes need a bearer token whenever the address is not loopback: the service refuses
  to start otherwise;
- the model is the one recorded in the index when it is a built-in name; a model given
  as a path (recorded, or on the command line) is loaded only from ``--model``, never
  from the index file alone or a request; URLs are refused (no download at run time).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from ..embed import BUILTIN_MODEL_NAMES
from .batching import BatchSettings

TOKEN_ENV = "FASTRETRIEVE_TOKEN"
# Models that need no file: the recorded name is enough to load them.
BUILTIN_MODELS = BUILTIN_MODEL_NAMES
MODEL_ATTRIBUTE = "embedder"  # where `fastretrieve index` records its model


class ConfigError(ValueError):
    """A service configuration that must not start."""


# Defaults measured with benchmarks/bench_serve.py on 2 cores (BENCHMARKS.md): a short
# wait fills search batches at 16-64 clients at little cost to a single client; ONNX
# Runtime's per-image cost keeps falling up to batches of ~16 images.
DEFAULT_SEARCH = BatchSettings(max_batch=64, max_wait_s=0.0005, max_pending=4096)
DEFAULT_EMBED = BatchSettings(max_batch=16, max_wait_s=0.002, max_pending=256)
DEFAULT_WRITE = BatchSettings(max_batch=256, max_wait_s=0.0, max_pending=4096)


@dataclass
class ServeConfig:
    """Everything the service is started with. See ``fastretrieve serve --help``."""

    index_path: Path
    host: str = "127.0.0.1"
    port: int = 8000
    model: str | None = None
    read_only: bool = False
    token: str | None = None
    search: BatchSettings = DEFAULT_SEARCH
    embed: BatchSettings = DEFAULT_EMBED
    write: BatchSettings = DEFAULT_WRITE
    max_body_bytes: int = 32 << 20
    max_image_pixels: int | None = None  # None: the embedder's default
    request_timeout_s: float = 30.0
    compact_interval_s: float = 60.0
    compact_log_bytes: int = 256 << 20
    shutdown_timeout_s: float = 30.0

    def check(self) -> None:
        """Refuse configurations that must not start (ConfigError says why)."""
        if not self.read_only and self.token is None and not is_loopback(self.host):
            raise ConfigError(
                f"refusing to serve writes on {self.host}, which is not a loopback address, "
                f"without a token: set {TOKEN_ENV} or pass --token-file, or use --read-only"
            )
        if self.token is not None and len(self.token) < 16:
            raise ConfigError("the write token must be at least 16 characters long")
        if self.model is not None and "://" in self.model:
            raise ConfigError("--model takes a built-in name or a local .onnx file, not a URL")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(token_file: os.PathLike | None) -> str | None:
    """The write token: from ``token_file`` (first line), else ``$FASTRETRIEVE_TOKEN``."""
    if token_file is not None:
        token = Path(token_file).read_text().strip()
        if not token:
            raise ConfigError(f"{token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


def model_to_serve(attributes: dict, model: str | None) -> tuple[str | None, str | None]:
    """(model to load, fingerprint it must have) for an index with ``attributes``.

    ``model`` (from the command line) wins; else the index's recorded model if it is a
    built-in name; else there is no model and the image endpoints answer 409.
    """
    record = attributes.get(MODEL_ATTRIBUTE)
    fingerprint = None
    recorded = None
    if isinstance(record, dict) and isinstance(record.get("model"), str):
        recorded = record["model"]
        fingerprint = record.get("fingerprint") if isinstance(record.get("fingerprint"), str) else None
    if model is not None:
        if model not in BUILTIN_MODELS and not Path(model).is_file():
            raise ConfigError(f"--model {model!r} is neither a built-in model nor a file")
        return model, fingerprint
    if recorded in BUILTIN_MODELS:
        return recorded, fingerprint
    if recorded is not None:
        raise ConfigError(
            f"the index was built with model {recorded!r}, which is not built in: pass it "
            "with --model (a local file) to serve images"
        )
    return None, None
