from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster, start_cluster
from tests.conftest_registry import registry  # noqa: F401 - a session fixture for image tests

SEED = Path(__file__).resolve().parent.parent.parent / "shared" / "seed"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One server shared by every test that isolates itself in a namespace."""
    c = start_cluster(tmp_path_factory.mktemp("kubi-shared"))
    yield c
    c.stop()


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def seed_dir() -> Path:
    return SEED
