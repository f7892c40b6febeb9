"""Every bad input gets upstream's status code and a clear Status, and changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.cluster import Cluster

CM = "/api/v1/namespaces/{ns}/configmaps"


def configmap(name: str, **extra: object) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {"k": "v"}, **extra}


def assert_status(response: httpx.Response, code: int, reason: str, text: str = "") -> dict:
    assert response.status_code == code, response.text
    body = response.json()
    assert body["kind"] == "Status" and body["status"] == "Failure"
    assert body["code"] == code
    assert body.get("reason") == reason, body
    assert text in body["message"], body["message"]
    return body


def names(client: httpx.Client, ns: str) -> list[str]:
    listed = client.get(CM.format(ns=ns)).json()
    return [item["metadata"]["name"] for item in listed["items"]
            if item["metadata"]["name"] != "kube-root-ca.crt"]  # published by a controller


@pytest.fixture
def client(cluster: Cluster) -> Iterator[httpx.Client]:
    with cluster.http() as c:
        yield c


JSON = {"content-type": "application/json"}


def test_malformed_json_and_yaml(client: httpx.Client, namespace: str) -> None:
    url = CM.format(ns=namespace)
    assert_status(client.post(url, content=b'{"apiVersion": "v1", "kind":', headers=JSON),
                  400, "BadRequest")
    assert_status(client.post(url, content=b"kind: ConfigMap\n  bad: [indent",
                              headers={"content-type": "application/yaml"}),
                  400, "BadRequest", "YAML")
    assert_status(client.post(url, content=b"[1, 2]", headers=JSON), 400, "BadRequest")
    assert names(client, namespace) == []


def test_wrong_kind_and_api_version(client: httpx.Client, namespace: str) -> None:
    url = CM.format(ns=namespace)
    wrong_kind = configmap("a")
    wrong_kind["kind"] = "Secret"
    assert_status(client.post(url, content=orjson.dumps(wrong_kind), headers=JSON),
                  400, "BadRequest", "Secret")
    wrong_version = configmap("b")
    wrong_version["apiVersion"] = "apps/v1"
    assert_status(client.post(url, content=orjson.dumps(wrong_version), headers=JSON),
                  400, "BadRequest", "apps/v1")
    assert names(client, namespace) == []


def test_invalid_names(client: httpx.Client, namespace: str) -> None:
    url = CM.format(ns=namespace)
    for bad in ("Upper_Case", "-starts-with-dash", "a" * 254):
        body = assert_status(client.post(url, content=orjson.dumps(configmap(bad)),
                                         headers=JSON), 422, "Invalid", "metadata.name")
        assert body["details"]["causes"][0]["field"] == "metadata.name"
    body = assert_status(client.post(url, content=orjson.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}), headers=JSON),
        422, "Invalid", "name or generateName is required")
    assert names(client, namespace) == []


def test_unknown_fields_strict_and_warn(client: httpx.Client, namespace: str) -> None:
    url = CM.format(ns=namespace)
    obj = configmap("strict", bogus=1)
    assert_status(client.post(url, params={"fieldValidation": "Strict"},
                              content=orjson.dumps(obj), headers=JSON),
                  400, "BadRequest", 'strict decoding error: unknown field "bogus"')
    assert names(client, namespace) == []
    warned = client.post(url, params={"fieldValidation": "Warn"}, content=orjson.dumps(obj),
                         headers=JSON)
    assert warned.status_code == 201
    assert 'unknown field \\"bogus\\"' in warned.headers["warning"]
    assert "bogus" not in warned.json()
    assert_status(client.post(url, params={"fieldValidation": "Sometimes"},
                              content=orjson.dumps(configmap("x")), headers=JSON),
                  400, "BadRequest", "fieldValidation")


def test_wrong_field_type(client: httpx.Client, namespace: str) -> None:
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
              "spec": {"replicas": "three", "selector": {"matchLabels": {"a": "b"}},
                       "template": {"metadata": {"labels": {"a": "b"}},
                                    "spec": {"containers": [{"name": "c", "image": "x"}]}}}}
    assert_status(client.post(f"/apis/apps/v1/namespaces/{namespace}/deployments",
                              content=orjson.dumps(deploy), headers=JSON),
                  400, "BadRequest", "cannot unmarshal string")


def test_stale_resource_version_conflicts(client: httpx.Client, namespace: str) -> None:
    url = CM.format(ns=namespace)
    created = client.post(url, content=orjson.dumps(configmap("cas")), headers=JSON).json()
    first = dict(created, data={"k": "first"})
    assert client.put(f"{url}/cas", content=orjson.dumps(first), headers=JSON).status_code == 200
    stale = dict(created, data={"k": "stale"})
    assert_status(client.put(f"{url}/cas", content=orjson.dumps(stale), headers=JSON),
                  409, "Conflict", "the object has been modified")
    assert client.get(f"{url}/cas").json()["data"] == {"k": "first"}


def test_oversized_body(client: httpx.Client, namespace: str) -> None:
    url = CM.format(ns=namespace)
    big = configmap("big")
    big["data"] = {"k": "x" * (3 * 1024 * 1024 + 10)}
    assert_status(client.post(url, content=orjson.dumps(big), headers=JSON),
                  413, "RequestEntityTooLarge")
    assert names(client, namespace) == []


def test_unknown_resources_and_paths(client: httpx.Client, namespace: str) -> None:
    assert_status(client.get(f"/api/v1/namespaces/{namespace}/widgets"), 404, "NotFound")
    assert_status(client.get("/apis/nope.example.com/v1"), 404, "NotFound")
    assert_status(client.get(f"{CM.format(ns=namespace)}/missing"), 404, "NotFound",
                  'configmaps "missing" not found')
    assert_status(client.post("/api/v1/namespaces/no-such-ns/configmaps",
                              content=orjson.dumps(configmap("x")), headers=JSON),
                  404, "NotFound", 'namespaces "no-such-ns" not found')


def test_wrong_content_types(client: httpx.Client, namespace: str) -> None:
    url = CM.format(ns=namespace)
    assert_status(client.post(url, content=orjson.dumps(configmap("t")),
                              headers={"content-type": "text/plain"}),
                  415, "UnsupportedMediaType")
    client.post(url, content=orjson.dumps(configmap("p")), headers=JSON)
    assert_status(client.patch(f"{url}/p", content=b'{"data":{"k":"z"}}', headers=JSON),
                  415, "UnsupportedMediaType")
    assert client.get(f"{url}/p").json()["data"] == {"k": "v"}
    assert_status(client.post(url, content=b"k8s\x00garbage",
                              headers={"content-type": "application/vnd.kubernetes.protobuf"}),
                  400, "BadRequest")
    assert sorted(names(client, namespace)) == ["p"]


def test_duplicate_create_and_immutable_fields(client: httpx.Client, namespace: str) -> None:
    url = CM.format(ns=namespace)
    assert client.post(url, content=orjson.dumps(configmap("dup")), headers=JSON).is_success
    assert_status(client.post(url, content=orjson.dumps(configmap("dup")), headers=JSON),
                  409, "AlreadyExists", 'configmaps "dup" already exists')
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
           "spec": {"ports": [{"port": 80}]}}
    svc_url = f"/api/v1/namespaces/{namespace}/services"
    created = client.post(svc_url, content=orjson.dumps(svc), headers=JSON).json()
    changed = dict(created)
    changed["spec"] = dict(created["spec"], clusterIP="10.43.99.99", clusterIPs=["10.43.99.99"])
    assert_status(client.put(f"{svc_url}/s", content=orjson.dumps(changed), headers=JSON),
                  422, "Invalid")
    assert client.get(f"{svc_url}/s").json()["spec"]["clusterIP"] == created["spec"]["clusterIP"]


def test_kubectl_reports_invalid_manifest(cluster: Cluster, namespace: str,
                                          tmp_path: Path) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: bad\n"
                        "spec:\n  selector:\n    matchLabels: {app: a}\n  template:\n"
                        "    metadata:\n      labels: {app: b}\n    spec:\n      containers:\n"
                        "      - name: c\n        image: nginx\n        ports:\n"
                        "        - containerPort: 70000\n")
    result = cluster.kubectl("apply", "-n", namespace, "-f", str(manifest), check=False)
    assert result.returncode == 1
    assert "is invalid" in result.stderr
    assert "containerPort" in result.stderr
    assert "No resources found" in cluster.kubectl("get", "deploy", "-n", namespace).stderr
