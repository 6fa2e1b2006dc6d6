"""A local Ray cluster for the distributed tests: 2 CPUs, loopback only, no dashboard, no
usage statistics, started once per session and shut down at the end."""

from __future__ import annotations

import os

import pytest

# Set before Ray is imported anywhere: nothing in these tests may reach the network.
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.setdefault("RAY_DISABLE_DOCKER_CPU_WARNING", "1")


@pytest.fixture(scope="session")
def ray_cluster():
    """The connected ``ray`` module of a local 2-CPU cluster."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
