"""API machinery semantics on a real server: pagination, dry-run, deletion, allocation."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.cluster import Cluster

JSON = {"content-type": "application/json"}


@pytest.fixture
def client(cluster: Cluster) -> Iterator[httpx.Client]:
    with cluster.http() as c:
        yield c


def cm(name: str, **meta: object) -> bytes:
    return orjson.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": name, **meta}})


def test_pagination_with_continue(client: httpx.Client, namespace: str) -> None:
    url = f"/api/v1/namespaces/{namespace}/configmaps"
    for i in range(7):
        assert client.post(url, content=cm(f"page-{i}", labels={"set": "p"}),
                           headers=JSON).status_code == 201
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        params = {"limit": "3", "labelSelector": "set=p"}
        if token:
            params["continue"] = token
        page = client.get(url, params=params).json()
        pages += 1
        seen += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"].get("continue", "")
        if not token:
            break
    assert pages == 3
    assert seen == [f"page-{i}" for i in range(7)]
    bad = client.get(url, params={"limit": "3", "continue": "not-a-token"})
    assert bad.status_code == 400 and bad.json()["reason"] == "BadRequest"


def test_server_side_dry_run_stores_nothing(cluster: Cluster, namespace: str) -> None:
    out = cluster.kubectl("create", "deployment", "dry", "--image=nginx", "-n", namespace,
                          "--dry-run=server", "-o", "json").stdout
    assert json.loads(out)["metadata"]["name"] == "dry"
    missing = cluster.kubectl("get", "deploy", "dry", "-n", namespace, check=False)
    assert missing.returncode == 1 and "NotFound" in missing.stderr
    cluster.kubectl("create", "configmap", "keep", "--from-literal=a=1", "-n", namespace)
    cluster.kubectl("label", "cm", "keep", "x=y", "--dry-run=server", "-n", namespace)
    labels = json.loads(cluster.kubectl("get", "cm", "keep", "-n", namespace, "-o",
                                        "json").stdout)["metadata"].get("labels", {})
    assert "x" not in labels
    cluster.kubectl("delete", "cm", "keep", "--dry-run=server", "-n", namespace)
    cluster.kubectl("get", "cm", "keep", "-n", namespace)


def test_finalizers_hold_deletion_until_removed(client: httpx.Client, namespace: str) -> None:
    url = f"/api/v1/namespaces/{namespace}/configmaps"
    client.post(url, content=cm("held", finalizers=["example.com/hold"]), headers=JSON)
    deleted = client.delete(f"{url}/held")
    assert deleted.status_code == 200  # upstream: 202 only with orphanDependents=false
    held = client.get(f"{url}/held").json()
    assert held["metadata"]["deletionTimestamp"]
    patch = client.patch(f"{url}/held", content=b'{"metadata":{"finalizers":null}}',
                         headers={"content-type": "application/merge-patch+json"})
    assert patch.status_code == 200
    assert client.get(f"{url}/held").status_code == 404


def test_force_delete_of_a_bound_pod(client: httpx.Client, namespace: str,
                                     cluster: Cluster) -> None:
    url = f"/api/v1/namespaces/{namespace}/pods"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bound"},
           "spec": {"nodeName": "no-such-node", "containers": [{"name": "c", "image": "x"}]}}
    assert client.post(url, content=orjson.dumps(pod), headers=JSON).status_code == 201
    graceful = client.delete(f"{url}/bound")
    assert graceful.status_code == 200  # pods answer with the object
    assert client.get(f"{url}/bound").json()["metadata"]["deletionGracePeriodSeconds"] == 30
    cluster.kubectl("delete", "pod", "bound", "-n", namespace, "--grace-period=0", "--force")
    assert client.get(f"{url}/bound").status_code == 404


def test_node_port_allocation_and_collisions(client: httpx.Client, namespace: str) -> None:
    url = f"/api/v1/namespaces/{namespace}/services"

    def svc(name: str, node_port: int | None = None) -> bytes:
        port: dict[str, object] = {"port": 80}
        if node_port:
            port["nodePort"] = node_port
        return orjson.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                             "spec": {"type": "NodePort", "selector": {"a": "b"},
                                      "ports": [port]}})

    auto = client.post(url, content=svc("auto"), headers=JSON).json()
    assigned = auto["spec"]["ports"][0]["nodePort"]
    assert 30000 <= assigned <= 32767
    clash = client.post(url, content=svc("clash", assigned), headers=JSON)
    assert clash.status_code == 422
    assert "provided port is already allocated" in clash.json()["message"]
    out_of_range = client.post(url, content=svc("far", 80), headers=JSON)
    assert out_of_range.status_code == 422
    assert client.get(f"{url}/clash").status_code == 404
    client.delete(f"{url}/auto")
    reuse = client.post(url, content=svc("reuse", assigned), headers=JSON)
    assert reuse.status_code == 201, reuse.text


def test_external_name_service(cluster: Cluster, namespace: str, seed_dir: object) -> None:
    from pathlib import Path

    manifest = Path(str(seed_dir)) / "manifests" / "externalname-service.yml"
    cluster.kubectl("apply", "-n", namespace, "-f", str(manifest))
    svc = json.loads(cluster.kubectl("get", "svc", "gihyo", "-n", namespace, "-o",
                                     "json").stdout)
    assert svc["spec"]["type"] == "ExternalName"
    assert "clusterIP" not in svc["spec"]
    row = cluster.kubectl("get", "svc", "gihyo", "-n", namespace).stdout.splitlines()[1].split()
    assert row[:5] == ["gihyo", "ExternalName", "<none>", "gihyo.jp", "<none>"]


def test_method_not_allowed(client: httpx.Client, namespace: str) -> None:
    r = client.put(f"/api/v1/namespaces/{namespace}/configmaps", content=cm("x"), headers=JSON)
    assert r.status_code == 405 and r.json()["reason"] == "MethodNotAllowed"
    r = client.delete("/api/v1/namespaces")  # namespaces have no deletecollection
    assert r.status_code == 405
