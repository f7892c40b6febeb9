"""Ingress in extensions/v1beta1 and networking.k8s.io/v1beta1: extra served versions of
the networking.k8s.io/v1 resource (conversion, schemas, OpenAPI, strategy, API server)."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from kubi.api import schemas
from kubi.api.resources import CATALOGUE, GROUP_VERSIONS, ResourceInfo
from kubi.apiserver import certs, conversion, discovery, fieldcheck, openapi, tables
from kubi.apiserver.app import APIServer
from kubi.apiserver.registry.ingress_v1beta1 import LegacyIngressStrategy
from kubi.apiserver.registry.strategy import strategy_for
from kubi.apiserver.server import bootstrap
from kubi.apiserver.tokens import TokenAuthority
from kubi.storage import SQLiteBackend

Obj = dict[str, Any]

EXT_WARNING = ("extensions/v1beta1 Ingress is deprecated in v1.14+, unavailable in v1.22+; "
               "use networking.k8s.io/v1 Ingress")
NET_WARNING = ("networking.k8s.io/v1beta1 Ingress is deprecated in v1.19+, unavailable in "
               "v1.22+; use networking.k8s.io/v1 Ingress")


def _info(api_version: str, kind: str = "Ingress") -> ResourceInfo:
    info = CATALOGUE.by_kind(api_version, kind)
    assert info is not None
    return info


V1 = _info("networking.k8s.io/v1")
EXT = _info("extensions/v1beta1")
NET_BETA = _info("networking.k8s.io/v1beta1")


def _convert(obj: Obj, info: ResourceInfo) -> Obj:
    out = conversion.to_version(obj, info)
    assert out is not None
    return out


def book_ingress() -> Obj:
    """The book's manifest, as kubectl sends it."""
    return {
        "apiVersion": "extensions/v1beta1", "kind": "Ingress",
        "metadata": {"name": "echo", "annotations": {
            "nginx.ingress.kubernetes.io/server-snippet": "set $agentflag 0;\n"}},
        "spec": {"rules": [{"host": "ch05.gihyo.local", "http": {"paths": [
            {"path": "/", "backend": {"serviceName": "echo", "servicePort": 80}}]}}]},
    }


def full_v1() -> Obj:
    """A v1 Ingress using every field that differs between the versions."""
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "full", "namespace": "ns", "labels": {"a": "b"}},
        "spec": {
            "ingressClassName": "nginx",
            "defaultBackend": {"service": {"name": "fallback", "port": {"name": "http"}}},
            "tls": [{"hosts": ["a.example.com"], "secretName": "tls"}],
            "rules": [{"host": "a.example.com", "http": {"paths": [
                {"path": "/n", "pathType": "Prefix",
                 "backend": {"service": {"name": "num", "port": {"number": 8080}}}},
                {"path": "/s", "pathType": "Exact",
                 "backend": {"service": {"name": "named", "port": {"name": "web"}}}},
                {"path": "/r", "pathType": "ImplementationSpecific",
                 "backend": {"resource": {"apiGroup": "k8s.example.com", "kind": "Bucket",
                                          "name": "static"}}},
            ]}}],
        },
        "status": {"loadBalancer": {"ingress": [
            {"ip": "10.0.0.1", "ports": [{"port": 80, "protocol": "TCP"}]},
            {"hostname": "lb.example.com"}]}},
    }


# ---------------------------------------------------------------------------
# Catalogue


def test_catalogue_rows_share_v1_storage_and_carry_upstream_warnings() -> None:
    ingress_class = _info("networking.k8s.io/v1beta1", "IngressClass")
    assert EXT.storage_prefix == NET_BETA.storage_prefix == V1.storage_prefix
    assert ingress_class.storage_prefix == _info("networking.k8s.io/v1",
                                                 "IngressClass").storage_prefix
    assert EXT.deprecation == EXT_WARNING
    assert NET_BETA.deprecation == NET_WARNING
    assert ingress_class.deprecation == (
        "networking.k8s.io/v1beta1 IngressClass is deprecated in v1.19+, unavailable in "
        "v1.22+; use networking.k8s.io/v1 IngressClass")
    assert V1.deprecation == ""
    # `ing` stays unambiguous for kubectl (it warns when a short name spans groups).
    assert EXT.short_names == () and NET_BETA.short_names == V1.short_names == ("ing",)
    # v1 stays preferred, and networking.k8s.io is discovered before extensions, so a
    # plain `kubectl get ingress` resolves to networking.k8s.io/v1.
    assert GROUP_VERSIONS["networking.k8s.io"] == ("v1", "v1beta1")
    groups = list(GROUP_VERSIONS)
    assert groups.index("networking.k8s.io") < groups.index("extensions")
    group_doc = json.loads(discovery.api_group("extensions") or b"{}")
    assert group_doc["preferredVersion"]["groupVersion"] == "extensions/v1beta1"
    resource_list = json.loads(discovery.api_resource_list("extensions", "v1beta1") or b"{}")
    assert [r["name"] for r in resource_list["resources"]] == ["ingresses", "ingresses/status"]


# ---------------------------------------------------------------------------
# Conversion


def test_book_manifest_converts_to_v1_with_defaulted_path_type() -> None:
    sent = book_ingress()
    kept = copy.deepcopy(sent)
    v1 = _convert(sent, V1)
    assert sent == kept, "conversion must not change its input"
    assert v1["apiVersion"] == "networking.k8s.io/v1" and v1["kind"] == "Ingress"
    assert v1["metadata"] == sent["metadata"]
    assert v1["spec"]["rules"][0]["http"]["paths"] == [{
        "path": "/", "pathType": "ImplementationSpecific",
        "backend": {"service": {"name": "echo", "port": {"number": 80}}}}]


def test_v1beta1_backends_named_port_resource_and_default_backend() -> None:
    obj: Obj = {
        "apiVersion": "networking.k8s.io/v1beta1", "kind": "Ingress", "metadata": {"name": "x"},
        "spec": {
            "backend": {"serviceName": "fallback", "servicePort": "http"},
            "rules": [{"http": {"paths": [
                {"path": "/r", "pathType": "Prefix", "backend": {
                    "resource": {"kind": "Bucket", "name": "b"}}},
                {"path": "/p", "backend": {"serviceName": "svc"}},
            ]}}],
        },
    }
    v1 = _convert(obj, V1)
    spec = v1["spec"]
    assert "backend" not in spec
    assert spec["defaultBackend"] == {"service": {"name": "fallback", "port": {"name": "http"}}}
    resource_path, bare_path = spec["rules"][0]["http"]["paths"]
    assert resource_path == {"path": "/r", "pathType": "Prefix",
                             "backend": {"resource": {"kind": "Bucket", "name": "b"}}}
    # A name without a port still makes a service backend (and fails v1 validation).
    assert bare_path["backend"] == {"service": {"name": "svc", "port": {}}}
    assert bare_path["pathType"] == "ImplementationSpecific"


def test_v1_to_v1beta1_flattens_backends() -> None:
    beta = _convert(full_v1(), EXT)
    assert beta["apiVersion"] == "extensions/v1beta1"
    spec = beta["spec"]
    assert "defaultBackend" not in spec
    assert spec["backend"] == {"serviceName": "fallback", "servicePort": "http"}
    paths = spec["rules"][0]["http"]["paths"]
    assert paths[0]["backend"] == {"serviceName": "num", "servicePort": 8080}
    assert paths[1]["backend"] == {"serviceName": "named", "servicePort": "web"}
    # Go always wrote the IntOrString struct: 0 when there is no service.
    assert paths[2]["backend"] == {"resource": {"apiGroup": "k8s.example.com",
                                                "kind": "Bucket", "name": "static"},
                                   "servicePort": 0}
    assert [p["pathType"] for p in paths] == ["Prefix", "Exact", "ImplementationSpecific"]
    assert spec["tls"] == full_v1()["spec"]["tls"]
    assert spec["ingressClassName"] == "nginx"
    assert beta["status"] == full_v1()["status"]


@pytest.mark.parametrize("legacy", [EXT, NET_BETA], ids=lambda r: r.api_version)
def test_round_trip_through_v1beta1_is_lossless(legacy: ResourceInfo) -> None:
    original = full_v1()
    back = _convert(_convert(original, legacy), V1)
    assert back == original


def test_between_the_two_v1beta1_versions_only_api_version_changes() -> None:
    ext = book_ingress()
    net = _convert(ext, NET_BETA)
    assert net["apiVersion"] == "networking.k8s.io/v1beta1"
    assert {k: v for k, v in net.items() if k != "apiVersion"} == {
        k: v for k, v in ext.items() if k != "apiVersion"}
    assert _convert(net, EXT) == ext


def test_ingress_class_v1beta1_is_the_v1_shape() -> None:
    beta_class = _info("networking.k8s.io/v1beta1", "IngressClass")
    v1_class = _info("networking.k8s.io/v1", "IngressClass")
    obj: Obj = {"apiVersion": "networking.k8s.io/v1beta1", "kind": "IngressClass",
                "metadata": {"name": "nginx"},
                "spec": {"controller": "k8s.io/ingress-nginx", "parameters": {
                    "kind": "Params", "name": "p", "scope": "Cluster"}}}
    v1 = _convert(obj, v1_class)
    assert v1["apiVersion"] == "networking.k8s.io/v1" and v1["spec"] == obj["spec"]
    assert _convert(v1, beta_class) == obj
    # No cross-kind conversion: an Ingress is not an IngressClass.
    assert conversion.to_version(book_ingress(), v1_class) is None


# ---------------------------------------------------------------------------
# Schemas, decoding checks, OpenAPI


@pytest.mark.parametrize("group", ["extensions", "networking.k8s.io"])
def test_schemas_for_v1beta1_ingress(group: str) -> None:
    schema = schemas.for_kind(group, "v1beta1", "Ingress")
    assert schema is not None
    assert schema["x-kubernetes-group-version-kind"] == [
        {"group": group, "kind": "Ingress", "version": "v1beta1"}]
    assert schemas.for_kind(group, "v1beta1", "IngressList") is not None
    spec = schemas.property_schema(schema, "spec")
    assert spec is not None and "backend" in spec["properties"]
    assert "defaultBackend" not in spec["properties"]
    backend = schemas.property_schema(spec, "backend")
    assert backend is not None
    assert set(backend["properties"]) == {"serviceName", "servicePort", "resource"}
    assert schemas.types_of(schemas.property_schema(backend, "servicePort")) == {
        "integer", "string"}
    rules = schemas.items_schema(schemas.property_schema(spec, "rules"))
    paths = schemas.items_schema(schemas.property_schema(
        schemas.property_schema(rules, "http"), "paths"))
    assert paths is not None and "pathType" not in paths["required"]
    assert schemas.ref_name(paths["properties"]["backend"]) == (
        f"io.k8s.api.{group.removesuffix('.k8s.io')}.v1beta1.IngressBackend")
    # The v1 schemas are untouched.
    v1_spec = schemas.property_schema(schemas.for_kind("networking.k8s.io", "v1", "Ingress"),
                                      "spec")
    assert v1_spec is not None and "defaultBackend" in v1_spec["properties"]


def test_ingress_class_v1beta1_schema() -> None:
    schema = schemas.for_kind("networking.k8s.io", "v1beta1", "IngressClass")
    assert schema is not None
    spec = schemas.property_schema(schema, "spec")
    assert spec is not None and set(spec["properties"]) == {"controller", "parameters"}
    assert schemas.for_kind("extensions", "v1beta1", "IngressClass") is None


def test_field_checks_use_the_v1beta1_shape() -> None:
    assert fieldcheck.check(book_ingress(), "extensions", "v1beta1", "Ingress").unknown == []
    v1_shaped = book_ingress()
    v1_shaped["spec"]["rules"][0]["http"]["paths"][0]["backend"] = {
        "service": {"name": "echo", "port": {"number": 80}}}
    found = fieldcheck.check(v1_shaped, "extensions", "v1beta1", "Ingress")
    assert found.unknown == ["spec.rules[0].http.paths[0].backend.service"]
    wrong_type = book_ingress()
    wrong_type["spec"]["rules"][0]["http"]["paths"][0]["backend"]["servicePort"] = [80]
    found = fieldcheck.check(wrong_type, "extensions", "v1beta1", "Ingress")
    assert found.type_error.endswith(
        "spec.rules[0].http.paths[0].backend.servicePort of type intstr.IntOrString")


@pytest.mark.parametrize(("group", "kinds"), [
    ("extensions", ["Ingress"]), ("networking.k8s.io", ["Ingress", "IngressClass"])])
def test_openapi_v3_documents_serve_the_v1beta1_group_versions(group: str,
                                                               kinds: list[str]) -> None:
    assert f"apis/{group}/v1beta1" in openapi.v3_index()["paths"]
    body = openapi.v3_document(group, "v1beta1")
    assert body is not None
    doc = json.loads(body)
    collection = doc["paths"][f"/apis/{group}/v1beta1/namespaces/{{namespace}}/ingresses"]
    post = collection["post"]
    assert "fieldValidation" in [p["name"] for p in post["parameters"]]
    assert post["x-kubernetes-group-version-kind"] == {
        "group": group, "kind": "Ingress", "version": "v1beta1"}
    item = doc["paths"][f"/apis/{group}/v1beta1/namespaces/{{namespace}}/ingresses/{{name}}"]
    assert "fieldValidation" in [p["name"] for p in item["patch"]["parameters"]]
    components = doc["components"]["schemas"]
    for kind in kinds:
        package = group.removesuffix(".k8s.io")
        definition = components[f"io.k8s.api.{package}.v1beta1.{kind}"]
        assert definition["x-kubernetes-group-version-kind"] == [
            {"group": group, "kind": kind, "version": "v1beta1"}]
    # Every reference in the document resolves inside it.
    text = body.decode()
    for ref in {part.split('"')[0] for part in text.split('"$ref":"#/components/schemas/')[1:]}:
        assert ref in components, ref


def test_ingress_table_for_extensions() -> None:
    beta = _convert(full_v1(), EXT)
    table = tables.table("ingresses", "extensions", [beta], now=datetime.now(UTC))
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name", "Class", "Hosts", "Address", "Ports", "Age"]
    assert table["rows"][0]["cells"][:5] == ["full", "nginx", "a.example.com",
                                             "10.0.0.1,lb.example.com", "80, 443"]


# ---------------------------------------------------------------------------
# Strategy


def test_strategies_registered_for_both_groups() -> None:
    assert isinstance(strategy_for("extensions", "Ingress"), LegacyIngressStrategy)
    assert isinstance(strategy_for("networking.k8s.io", "Ingress"), LegacyIngressStrategy)


def test_strategy_validates_v1beta1_through_v1_with_v1_field_paths() -> None:
    strategy = strategy_for("extensions", "Ingress")
    assert strategy.validate(book_ingress()) == []
    bad = book_ingress()
    bad["spec"]["rules"][0]["http"]["paths"][0]["backend"] = {"serviceName": "Echo_Svc"}
    fields = {c.field for c in strategy.validate(bad)}
    assert fields == {"spec.rules[0].http.paths[0].backend.service.name",
                      "spec.rules[0].http.paths[0].backend"}
    empty = {"apiVersion": "networking.k8s.io/v1beta1", "kind": "Ingress",
             "metadata": {"name": "x"}, "spec": {}}
    assert [c.field for c in strategy.validate(empty)] == ["spec"]
    # A v1 object through the shared networking.k8s.io entry is validated as is.
    v1_bad = full_v1()
    del v1_bad["spec"]["rules"][0]["http"]["paths"][0]["pathType"]
    assert [c.field for c in strategy_for("networking.k8s.io", "Ingress").validate(v1_bad)] == [
        "spec.rules[0].http.paths[0].pathType"]


def test_strategy_create_keeps_manifest_as_written_and_metadata_dict() -> None:
    strategy = strategy_for("extensions", "Ingress")
    obj = book_ingress()
    obj["status"] = {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}
    meta = obj["metadata"]
    strategy.default(obj)
    strategy.prepare_for_create(obj)
    assert obj["metadata"] is meta
    assert meta["generation"] == 1
    assert obj["status"] == {"loadBalancer": {}}
    assert obj["spec"] == book_ingress()["spec"], "the spec stays as the client wrote it"


def test_strategy_update_bumps_generation_on_spec_change_only() -> None:
    strategy = strategy_for("extensions", "Ingress")
    old = book_ingress()
    old["metadata"]["generation"] = 3
    old["status"] = {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}]}}
    same = book_ingress()
    strategy.prepare_for_update(same, old)
    assert same["metadata"]["generation"] == 3
    assert same["status"] == old["status"]
    changed = book_ingress()
    changed["spec"]["rules"][0]["http"]["paths"][0]["backend"]["servicePort"] = "http"
    strategy.prepare_for_update(changed, old)
    assert changed["metadata"]["generation"] == 4
    assert changed["spec"]["rules"][0]["http"]["paths"][0]["backend"] == {
        "serviceName": "echo", "servicePort": "http"}


# ---------------------------------------------------------------------------
# The API server over a real SQLite store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    creds = certs.ensure_credentials(tmp_path / "data")
    backend = SQLiteBackend(str(tmp_path / "state.db"), compact_interval=0)
    await backend.start()
    api = APIServer(backend, TokenAuthority(creds.admin_token, creds.service_account_key))
    await bootstrap(api)
    api.ready = True
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://kubi",
                                 headers={"Authorization": f"Bearer {creds.admin_token}"}
                                 ) as http:
        yield http
    await backend.close()


EXT_PATH = "/apis/extensions/v1beta1/namespaces/default/ingresses"
NET_BETA_PATH = "/apis/networking.k8s.io/v1beta1/namespaces/default/ingresses"
V1_PATH = "/apis/networking.k8s.io/v1/namespaces/default/ingresses"


def _warnings(response: httpx.Response) -> list[str]:
    return response.headers.get_list("warning")


@pytest.mark.anyio
async def test_api_create_read_in_every_version(client: httpx.AsyncClient) -> None:
    created = await client.post(EXT_PATH, params={"fieldValidation": "Strict"},
                                json=book_ingress())
    assert created.status_code == 201, created.text
    assert _warnings(created) == [f'299 - "{EXT_WARNING}"']
    assert created.json()["apiVersion"] == "extensions/v1beta1"

    v1 = await client.get(f"{V1_PATH}/echo")
    assert v1.status_code == 200 and _warnings(v1) == []
    body = v1.json()
    assert body["apiVersion"] == "networking.k8s.io/v1"
    assert body["spec"]["rules"][0]["http"]["paths"][0] == {
        "path": "/", "pathType": "ImplementationSpecific",
        "backend": {"service": {"name": "echo", "port": {"number": 80}}}}
    assert body["metadata"]["annotations"] == book_ingress()["metadata"]["annotations"]
    assert body["status"] == {"loadBalancer": {}}

    beta = await client.get(f"{NET_BETA_PATH}/echo")
    assert _warnings(beta) == [f'299 - "{NET_WARNING}"']
    assert beta.json()["apiVersion"] == "networking.k8s.io/v1beta1"
    assert beta.json()["spec"]["rules"][0]["http"]["paths"][0]["backend"] == {
        "serviceName": "echo", "servicePort": 80}

    listed = await client.get(V1_PATH)
    assert [i["spec"]["rules"][0]["http"]["paths"][0]["backend"] for i in listed.json()["items"]
            ] == [{"service": {"name": "echo", "port": {"number": 80}}}]
    ext_list = await client.get(EXT_PATH)
    assert ext_list.json()["kind"] == "IngressList"
    assert ext_list.json()["apiVersion"] == "extensions/v1beta1"
    assert _warnings(ext_list) == [f'299 - "{EXT_WARNING}"']

    # One stored object: a second create through another version conflicts.
    again = await client.post(V1_PATH, json=_convert(book_ingress(), V1))
    assert again.status_code == 409


@pytest.mark.anyio
async def test_api_writes_through_other_versions(client: httpx.AsyncClient) -> None:
    assert (await client.post(EXT_PATH, json=book_ingress())).status_code == 201
    # A merge patch through v1 of an object written in extensions/v1beta1.
    patched = await client.patch(
        f"{V1_PATH}/echo", headers={"Content-Type": "application/merge-patch+json"},
        json={"spec": {"ingressClassName": "nginx"}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["spec"]["ingressClassName"] == "nginx"
    assert patched.json()["metadata"]["generation"] == 2
    # A PUT through extensions of what it reads back.
    current = (await client.get(f"{EXT_PATH}/echo")).json()
    assert current["spec"]["ingressClassName"] == "nginx"
    current["spec"]["backend"] = {"serviceName": "fallback", "servicePort": "http"}
    put = await client.put(f"{EXT_PATH}/echo", json=current)
    assert put.status_code == 200, put.text
    v1 = (await client.get(f"{V1_PATH}/echo")).json()
    assert v1["spec"]["defaultBackend"] == {"service": {"name": "fallback",
                                                        "port": {"name": "http"}}}
    assert v1["metadata"]["generation"] == 3
    # Status through the v1beta1 status subresource, read back through v1.
    current = (await client.get(f"{NET_BETA_PATH}/echo")).json()
    current["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}
    status = await client.put(f"{NET_BETA_PATH}/echo/status", json=current)
    assert status.status_code == 200, status.text
    v1 = (await client.get(f"{V1_PATH}/echo")).json()
    assert v1["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.10"}]
    # Deleted through v1, gone in every version.
    deleted = await client.delete(f"{V1_PATH}/echo")
    assert deleted.status_code == 200
    assert (await client.get(f"{EXT_PATH}/echo")).status_code == 404


@pytest.mark.anyio
async def test_api_rejects_bad_v1beta1_objects_and_stores_nothing(
        client: httpx.AsyncClient) -> None:
    invalid = book_ingress()
    invalid["spec"]["rules"][0]["http"]["paths"][0]["backend"] = {"serviceName": "echo"}
    response = await client.post(EXT_PATH, json=invalid)
    assert response.status_code == 422, response.text
    status = response.json()
    assert status["reason"] == "Invalid"
    assert status["details"]["group"] == "extensions"
    assert [c["field"] for c in status["details"]["causes"]] == [
        "spec.rules[0].http.paths[0].backend"]
    assert "port name or number is required" in status["message"]

    v1_shaped = book_ingress()
    v1_shaped["spec"]["rules"][0]["http"]["paths"][0]["backend"] = {
        "service": {"name": "echo", "port": {"number": 80}}}
    strict = await client.post(EXT_PATH, params={"fieldValidation": "Strict"}, json=v1_shaped)
    assert strict.status_code == 400
    assert 'unknown field "spec.rules[0].http.paths[0].backend.service"' in strict.json()[
        "message"]

    bad_port = book_ingress()
    bad_port["spec"]["rules"][0]["http"]["paths"][0]["backend"]["servicePort"] = 70000
    response = await client.post(NET_BETA_PATH, json=bad_port)
    assert response.status_code == 422
    assert [c["field"] for c in response.json()["details"]["causes"]] == [
        "spec.rules[0].http.paths[0].backend.service.port.number"]

    assert (await client.get(V1_PATH)).json()["items"] == []


@pytest.mark.anyio
async def test_api_ingress_class_v1beta1(client: httpx.AsyncClient) -> None:
    path = "/apis/networking.k8s.io/v1beta1/ingressclasses"
    created = await client.post(path, json={
        "apiVersion": "networking.k8s.io/v1beta1", "kind": "IngressClass",
        "metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}})
    assert created.status_code == 201, created.text
    assert "IngressClass is deprecated in v1.19+" in created.headers["warning"]
    v1 = (await client.get("/apis/networking.k8s.io/v1/ingressclasses/nginx")).json()
    assert v1["apiVersion"] == "networking.k8s.io/v1"
    assert v1["spec"] == {"controller": "k8s.io/ingress-nginx"}
    missing = await client.post(path, json={
        "apiVersion": "networking.k8s.io/v1beta1", "kind": "IngressClass",
        "metadata": {"name": "broken"}, "spec": {}})
    assert missing.status_code == 422
    assert [c["field"] for c in missing.json()["details"]["causes"]] == ["spec.controller"]
