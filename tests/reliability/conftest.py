"""Fixtures of the reliability tier: a local standalone Flink cluster (JobManager + 2 TaskManagers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local.flink import ClusterShape, FlinkCluster
from infra.local.process import free_port


@pytest.fixture(scope="session")
def flink_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlinkCluster]:
    """What `pulse up --flink` starts, on free ports under a home of the test session's own."""
    home = Path(tmp_path_factory.mktemp("flink-cluster"))
    shape = ClusterShape(rest_port=free_port(), rpc_port=free_port(), taskmanagers=2, slots_per_taskmanager=2,
                         metrics_port=free_port())
    cluster = FlinkCluster(home, shape)
    try:
        cluster.start(timeout_s=180)
        yield cluster
    finally:
        cluster.stop()
