"""The OpenAPI v3/v2 documents: shape kubectl relies on, refs that resolve, upstream's schemas."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from kubi.api.resources import GROUP_VERSIONS, RESOURCES, ResourceInfo
from kubi.apiserver import openapi

ALL_GVS = [(g, v) for g, versions in GROUP_VERSIONS.items() for v in versions]
V3_SCHEMAS = "#/components/schemas/"


def _doc(group: str, version: str) -> dict[str, Any]:
    body = openapi.v3_document(group, version)
    assert body is not None
    parsed: dict[str, Any] = json.loads(body)
    return parsed


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _schema_nodes(schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A schema and its sub-schemas (not the property maps themselves)."""
    yield schema
    for sub in schema.get("properties", {}).values():
        yield from _schema_nodes(sub)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from _schema_nodes(schema[key])
    for sub in schema.get("allOf", []):
        yield from _schema_nodes(sub)


def _prefix(r: ResourceInfo) -> str:
    return f"/apis/{r.group}/{r.version}" if r.group else f"/api/{r.version}"


def _collection(r: ResourceInfo) -> str:
    if r.namespaced:
        return f"{_prefix(r)}/namespaces/{{namespace}}/{r.plural}"
    return f"{_prefix(r)}/{r.plural}"


def _params(path_item: dict[str, Any], method: str) -> dict[str, dict[str, Any]]:
    """Parameters of one operation, including those declared on its path."""
    found = {p["name"]: p for p in path_item.get("parameters", [])}
    found.update({p["name"]: p for p in path_item[method].get("parameters", [])})
    return found


def _kind_schema(doc: dict[str, Any], group: str, version: str, kind: str) -> dict[str, Any]:
    """Find a schema by GVK the way kubectl does: scanning the extension."""
    for schema in doc["components"]["schemas"].values():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            if gvk == {"group": group, "version": version, "kind": kind}:
                return dict(schema)
    raise AssertionError(f"no schema for {group}/{version} {kind}")


# ---- the index


def test_index_lists_every_group_version_with_its_hash() -> None:
    index = openapi.v3_index()
    expected = {f"apis/{g}/{v}" if g else f"api/{v}" for g, v in ALL_GVS}
    assert set(index["paths"]) == expected
    for group, version in ALL_GVS:
        key = f"apis/{group}/{version}" if group else f"api/{version}"
        etag = openapi.v3_etag(group, version)
        assert index["paths"][key] == {"serverRelativeURL": f"/openapi/v3/{key}?hash={etag}"}


def test_hash_is_a_stable_content_hash() -> None:
    body = openapi.v3_document("apps", "v1")
    assert body is not None
    assert openapi.v3_etag("apps", "v1") == hashlib.sha512(body).hexdigest().upper()
    assert openapi.v3_etag("apps", "v1") == openapi.v3_etag("apps", "v1")
    assert openapi.v3_etag("apps", "v1") != openapi.v3_etag("", "v1")
    assert json.dumps(openapi.v3_index()) == json.dumps(openapi.v3_index())


def test_unknown_group_versions_have_no_document() -> None:
    assert openapi.v3_document("apps", "v1beta1") is None
    assert openapi.v3_document("example.com", "v1") is None
    assert openapi.v3_document("", "v2") is None
    with pytest.raises(KeyError):
        openapi.v3_etag("example.com", "v1")


@pytest.mark.parametrize("path, expected", [
    ("api/v1", ("", "v1")),
    ("/apis/apps/v1", ("apps", "v1")),
    ("apis/rbac.authorization.k8s.io/v1", ("rbac.authorization.k8s.io", "v1")),
    ("apis/apps", None),
    ("apis//v1", None),
    ("api", None),
    ("apis/apps/v1/extra", None),
    ("version", None),
    ("apis/nope/v1", None),
])
def test_lookup_by_index_key(path: str, expected: tuple[str, str] | None) -> None:
    found = openapi.v3_lookup(path)
    if expected is None:
        assert found is None
    else:
        assert found == openapi.v3_document(*expected)


# ---- every v3 document


@pytest.mark.parametrize("group, version", ALL_GVS)
def test_v3_document_is_self_contained_openapi(group: str, version: str) -> None:
    doc = _doc(group, version)
    assert doc["openapi"] == "3.0.0"
    schemas = doc["components"]["schemas"]
    refs = [node["$ref"] for node in _walk(doc) if isinstance(node.get("$ref"), str)]
    assert refs
    for ref in refs:
        assert ref.startswith(V3_SCHEMAS), ref
        assert ref.removeprefix(V3_SCHEMAS) in schemas, ref
    for node in (n for schema in schemas.values() for n in _schema_nodes(schema)):
        kind = node.get("type")
        # JSON Schema's nullable widening must be gone: OpenAPI wants one type name.
        assert kind is None or isinstance(kind, str), node
        assert "oneOf" not in node, node
    prefix = f"/apis/{group}/{version}/" if group else f"/api/{version}/"
    assert all(path.startswith(prefix) for path in doc["paths"])


@pytest.mark.parametrize("group, version", ALL_GVS)
def test_every_operation_names_its_kind_and_action(group: str, version: str) -> None:
    doc = _doc(group, version)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            assert op["operationId"], (path, method)
            assert "200" in op["responses"], (path, method)
            if path.endswith(f"/{version}/"):
                continue  # the discovery document has no kind
            assert op["x-kubernetes-action"] in {
                "get", "list", "watch", "watchlist", "post", "put", "patch", "delete",
                "deletecollection", "connect"}, (path, method)
            assert set(op["x-kubernetes-group-version-kind"]) == {"group", "version", "kind"}


def test_operation_ids_are_unique() -> None:
    seen: dict[str, str] = {}
    for group, version in ALL_GVS:
        for path, item in _doc(group, version)["paths"].items():
            for method, op in item.items():
                if method == "parameters":
                    continue
                assert op["operationId"] not in seen, (path, seen.get(op["operationId"]))
                seen[op["operationId"]] = path


def _resource_id(r: ResourceInfo) -> str:
    return f"{r.group or 'core'}/{r.version}/{r.plural}"


@pytest.mark.parametrize("r", RESOURCES, ids=_resource_id)
def test_catalogue_resources_have_their_paths(r: ResourceInfo) -> None:
    paths = _doc(r.group, r.version)["paths"]
    collection = _collection(r)
    item = f"{collection}/{{name}}"
    gvk = {"group": r.group, "version": r.version, "kind": r.kind}
    assert paths[collection]["post"]["x-kubernetes-group-version-kind"] == gvk
    if "list" in r.verbs:
        assert paths[collection]["get"]["x-kubernetes-action"] == "list"
        assert "watch" in _params(paths[collection], "get")
    if "get" in r.verbs:
        read = paths[item]["get"]
        schema = read["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema["$ref"].removeprefix(V3_SCHEMAS).endswith(f".{r.kind}")
        assert _params(paths[item], "get")["name"]["in"] == "path"
    for sub in r.subresources:
        assert f"{item}/{sub.name}" in paths
    if r.namespaced:
        assert _params(paths[collection], "post")["namespace"]["required"] is True
        if "list" in r.verbs:
            assert f"{_prefix(r)}/{r.plural}" in paths  # across all namespaces
    else:
        assert "/namespaces/{namespace}/" not in collection
    if "deletecollection" not in r.verbs:
        assert "delete" not in paths[collection]


def test_namespaced_and_cluster_scoped_operation_ids() -> None:
    core = _doc("", "v1")["paths"]
    assert core["/api/v1/namespaces/{namespace}/pods"]["get"]["operationId"] == \
        "listCoreV1NamespacedPod"
    assert core["/api/v1/pods"]["get"]["operationId"] == "listCoreV1PodForAllNamespaces"
    assert core["/api/v1/nodes/{name}"]["get"]["operationId"] == "readCoreV1Node"
    rbac = _doc("rbac.authorization.k8s.io", "v1")["paths"]
    assert rbac["/apis/rbac.authorization.k8s.io/v1/clusterroles"]["post"]["operationId"] == \
        "createRbacAuthorizationV1ClusterRole"
    assert rbac["/apis/rbac.authorization.k8s.io/v1/clusterroles"]["post"]["tags"] == \
        ["rbacAuthorization_v1"]


# ---- what kubectl looks for


def test_deployment_writes_advertise_field_validation() -> None:
    paths = _doc("apps", "v1")["paths"]
    collection = "/apis/apps/v1/namespaces/{namespace}/deployments"
    post = paths[collection]["post"]
    by_name = {p["name"]: p for p in post["parameters"]}
    for name in ("dryRun", "fieldManager", "fieldValidation"):
        assert by_name[name]["in"] == "query"
        assert by_name[name]["schema"] == {"type": "string", "uniqueItems": True}
    assert post["requestBody"]["required"] is True
    assert post["requestBody"]["content"]["*/*"]["schema"] == {
        "$ref": V3_SCHEMAS + "io.k8s.api.apps.v1.Deployment"}
    assert set(post["responses"]) == {"200", "201", "202", "401"}
    # The GET of the same path takes no write parameters.
    assert "fieldValidation" not in _params(paths[collection], "get")


def test_kubectl_style_patch_lookup_finds_field_validation() -> None:
    """kubectl scans PATCH operations with the kind's GVK for an operation-level parameter."""
    paths = _doc("apps", "v1")["paths"]
    gvk = {"group": "apps", "version": "v1", "kind": "Deployment"}
    patches = [item["patch"] for item in paths.values()
               if "patch" in item and item["patch"]["x-kubernetes-group-version-kind"] == gvk]
    assert len(patches) == 2  # the object and its status
    for op in patches:
        names = {p["name"] for p in op["parameters"] if p["in"] == "query"}
        assert {"fieldValidation", "fieldManager", "dryRun", "force"} <= names
        assert "application/strategic-merge-patch+json" in op["requestBody"]["content"]
        assert "application/apply-patch+yaml" in op["requestBody"]["content"]


def test_scale_subresource_uses_autoscaling_v1_scale() -> None:
    doc = _doc("apps", "v1")
    scale = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]
    for method in ("get", "put", "patch"):
        assert scale[method]["x-kubernetes-group-version-kind"] == {
            "group": "autoscaling", "version": "v1", "kind": "Scale"}
    put_body = scale["put"]["requestBody"]["content"]["*/*"]["schema"]
    assert put_body == {"$ref": V3_SCHEMAS + "io.k8s.api.autoscaling.v1.Scale"}
    assert "io.k8s.api.autoscaling.v1.Scale" in doc["components"]["schemas"]
    assert scale["get"]["operationId"] == "readAppsV1NamespacedDeploymentScale"


def test_meta_types_are_included() -> None:
    schemas = _doc("apps", "v1")["components"]["schemas"]
    for name in ("Status", "DeleteOptions", "Patch", "WatchEvent", "ObjectMeta", "ListMeta",
                 "APIResourceList"):
        assert f"io.k8s.apimachinery.pkg.apis.meta.v1.{name}" in schemas
    assert "io.k8s.api.apps.v1.DeploymentList" in schemas
    # Only what the group-version reaches: no batch types in apps/v1.
    assert not any(name.startswith("io.k8s.api.batch.") for name in schemas)


def test_deployment_schema_carries_its_gvk() -> None:
    schema = _kind_schema(_doc("apps", "v1"), "apps", "v1", "Deployment")
    assert schema["type"] == "object"
    assert schema["x-kubernetes-group-version-kind"] == [
        {"group": "apps", "kind": "Deployment", "version": "v1"}]
    # The JSON Schema generator's enum on apiVersion/kind is not upstream's.
    assert schema["properties"]["apiVersion"] == {
        "description": schema["properties"]["apiVersion"]["description"], "type": "string"}
    # A described reference is wrapped in allOf, as OpenAPI 3.0 ignores $ref siblings.
    spec = schema["properties"]["spec"]
    assert spec["allOf"] == [{"$ref": V3_SCHEMAS + "io.k8s.api.apps.v1.DeploymentSpec"}]
    assert spec["description"]


def test_pod_spec_keeps_patch_extensions() -> None:
    schemas = _doc("", "v1")["components"]["schemas"]
    containers = schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["type"] == "array"
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    assert containers["x-kubernetes-list-map-keys"] == ["name"]
    assert containers["items"] == {"$ref": V3_SCHEMAS + "io.k8s.api.core.v1.Container"}
    # The same holds in apps/v1, where PodSpec is reached through the pod template.
    apps = _doc("apps", "v1")["components"]["schemas"]
    assert apps["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"][
        "x-kubernetes-patch-merge-key"] == "name"


def test_int_or_string_and_quantity_are_upstream_strings() -> None:
    schemas = _doc("", "v1")["components"]["schemas"]
    int_or_string = schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]
    assert int_or_string["type"] == "string"
    assert int_or_string["format"] == "int-or-string"
    quantity = schemas["io.k8s.apimachinery.pkg.api.resource.Quantity"]
    assert quantity["type"] == "string"
    assert "format" not in quantity


def test_pod_connect_and_log_subresources() -> None:
    paths = _doc("", "v1")["paths"]
    exec_path = paths["/api/v1/namespaces/{namespace}/pods/{name}/exec"]
    assert set(exec_path) == {"get", "post", "parameters"}
    assert exec_path["get"]["x-kubernetes-action"] == "connect"
    assert exec_path["get"]["x-kubernetes-group-version-kind"]["kind"] == "PodExecOptions"
    assert {"command", "container", "stdin", "stdout", "stderr", "tty"} <= {
        p["name"] for p in exec_path["parameters"]}
    log = paths["/api/v1/namespaces/{namespace}/pods/{name}/log"]["get"]
    assert log["operationId"] == "readCoreV1NamespacedPodLog"
    assert log["responses"]["200"]["content"]["text/plain"]["schema"] == {"type": "string"}
    assert "/api/v1/namespaces/{namespace}/pods/{name}/proxy/{path}" in paths
    eviction = paths["/api/v1/namespaces/{namespace}/pods/{name}/eviction"]["post"]
    assert eviction["x-kubernetes-group-version-kind"] == {
        "group": "policy", "version": "v1", "kind": "Eviction"}


def test_delete_answers() -> None:
    core = _doc("", "v1")["paths"]
    pod_delete = core["/api/v1/namespaces/{namespace}/pods/{name}"]["delete"]
    assert pod_delete["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": V3_SCHEMAS + "io.k8s.api.core.v1.Pod"}
    cm_delete = core["/api/v1/namespaces/{namespace}/configmaps/{name}"]["delete"]
    assert cm_delete["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": V3_SCHEMAS + "io.k8s.apimachinery.pkg.apis.meta.v1.Status"}
    assert "requestBody" in cm_delete and "required" not in cm_delete["requestBody"]


# ---- v2


def test_v2_document_is_self_contained_swagger() -> None:
    doc = json.loads(openapi.v2_document())
    assert doc["swagger"] == "2.0"
    definitions = doc["definitions"]
    for node in _walk(doc):
        ref = node.get("$ref")
        if isinstance(ref, str):
            assert ref.startswith("#/definitions/"), ref
            assert ref.removeprefix("#/definitions/") in definitions, ref
    for r in RESOURCES:
        assert _collection(r) in doc["paths"]
    # v2 keeps siblings next to $ref (no allOf), like upstream's swagger.json.
    spec = definitions["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"]
    assert spec["$ref"] == "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
    assert "allOf" not in spec


def test_v2_parameters_have_swagger_shape() -> None:
    doc = json.loads(openapi.v2_document())
    post = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"]["post"]
    body, *query = post["parameters"]
    assert body == {"in": "body", "name": "body", "required": True,
                    "schema": {"$ref": "#/definitions/io.k8s.api.apps.v1.Deployment"}}
    field_validation = next(p for p in query if p["name"] == "fieldValidation")
    assert field_validation["in"] == "query"
    assert field_validation["type"] == "string"
    assert "schema" not in field_validation
    assert post["consumes"] == ["*/*"]
    patch = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert "application/strategic-merge-patch+json" in patch["consumes"]
    assert post["responses"]["201"]["schema"] == {
        "$ref": "#/definitions/io.k8s.api.apps.v1.Deployment"}


def test_documents_are_built_once() -> None:
    assert openapi.v3_document("apps", "v1") is openapi.v3_document("apps", "v1")
    assert openapi.v2_document() is openapi.v2_document()
