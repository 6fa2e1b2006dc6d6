"""Connecting to Ray: an existing cluster, or a local one started on demand."""

from __future__ import annotations

import os

import ray


def connect(address: str | None = None, **init_options) -> None:
    """Make sure this process is connected to Ray.

    Already connected: nothing to do. Otherwise ``ray.init(address=address)``: None or
    ``"local"`` starts a local cluster on the loopback interface, ``"auto"`` or
    ``"HOST:PORT"`` joins one. Usage statistics reporting is turned off unless the
    environment says otherwise, and no dashboard is started, so a fastretrieve job never
    reaches the network by itself.
    """
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    init_options.setdefault("log_to_driver", False)
    if address in (None, "local"):
        init_options.setdefault("include_dashboard", False)
        # Ray would otherwise find this node's address by routing towards a public one.
        init_options.setdefault("_node_ip_address", "127.0.0.1")
        address = "local"
    ray.init(address=address, **init_options)
