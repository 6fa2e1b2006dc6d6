"""fastretrieve on a Ray cluster: embed files into shard indexes, search them exactly.

Install with ``pip install "fastretrieve[ray]"``. Ray is imported only inside this
package (and only when a name that needs it is first used); the rest of fastretrieve
never imports it.

- :class:`ShardedIndex` -- exact search over shard `Index` files held by Ray actors,
  identical to one `Index` holding the union; never a silently partial answer
  (:class:`PartialSearchResult` only when asked for, :class:`ShardUnavailableError`
  otherwise).
- :func:`embed_to_shards` -- a Ray Data pipeline: decode in CPU tasks, embed in a pool
  of `Embedder` actors, write shard files and a manifest; resumable, exactly once
  (:class:`ShardingSummary`).
- :func:`manifest_from_shards`, :func:`write_manifest`, :func:`read_manifest`,
  :func:`is_manifest` -- the manifest that ties shard files together
  (:class:`Manifest`, :class:`ShardEntry`, :class:`ManifestError`).
- :func:`connect` -- join a Ray cluster, or start a local one.
"""

from importlib import import_module as _import_module

__all__ = [
    "Manifest",
    "ManifestError",
    "PartialSearchResult",
    "PlanMismatchError",
    "ShardEntry",
    "ShardUnavailableError",
    "ShardedIndex",
    "ShardingSummary",
    "connect",
    "embed_to_shards",
    "is_manifest",
    "manifest_from_shards",
    "read_manifest",
    "write_manifest",
]

# Loaded on first use, so reading a manifest (the command line checks whether a file is
# one) does not import Ray.
_LAZY = {
    "Manifest": ".manifest", "ManifestError": ".manifest", "ShardEntry": ".manifest",
    "is_manifest": ".manifest", "manifest_from_shards": ".manifest",
    "read_manifest": ".manifest", "write_manifest": ".manifest",
    "PartialSearchResult": ".sharded_index", "ShardUnavailableError": ".sharded_index",
    "ShardedIndex": ".sharded_index",
    "PlanMismatchError": ".pipeline", "ShardingSummary": ".pipeline", "embed_to_shards": ".pipeline",
    "connect": ".cluster",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(_import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fastretrieve.distributed' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
