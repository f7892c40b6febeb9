"""PATCH semantics (JSON patch, merge patch, strategic merge patch) as upstream applies them.

Request bodies in the `kubectl` tests are byte-for-byte what kubectl v1.32 sent
(/work/shared/docs/kubectl-requests.md, sections 4, 7, 8 and 10).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from kubi.api.errors import StatusError
from kubi.api.schemas import for_kind
from kubi.apiserver.patch import (
    JSON_PATCH,
    MERGE_PATCH,
    REJECTED,
    STRATEGIC_MERGE_PATCH,
    JSONPatchOperationError,
    apply_patch,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)

DEPLOYMENT = for_kind("apps", "v1", "Deployment")
POD = for_kind("", "v1", "Pod")
NODE = for_kind("", "v1", "Node")
PDB = for_kind("policy", "v1", "PodDisruptionBudget")


def deployment() -> dict[str, Any]:
    """The `echo` Deployment of the kubectl recordings (nginx + echo containers)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "echo",
            "namespace": "default",
            "labels": {"app": "echo", "tier": "web"},
            "annotations": {"deployment.kubernetes.io/revision": "3"},
            "finalizers": ["example.com/a", "example.com/b"],
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "echo"}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "metadata": {"labels": {"app": "echo"}},
                "spec": {
                    "containers": [
                        {
                            "name": "nginx",
                            "image": "gihyodocker/nginx:latest",
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "env": [
                                {"name": "BACKEND_HOST", "value": "localhost:8080"},
                                {"name": "DEBUG", "value": "1"},
                            ],
                        },
                        {
                            "name": "echo",
                            "image": "gihyodocker/echo:latest",
                            "ports": [
                                {"containerPort": 8080, "protocol": "TCP"},
                                {"containerPort": 9090, "protocol": "TCP"},
                            ],
                        },
                    ],
                    "volumes": [{"name": "conf", "configMap": {"name": "echo-conf"}}],
                    "restartPolicy": "Always",
                },
            },
        },
    }


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = obj["spec"]["template"]["spec"]["containers"]
    return result


def container(obj: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in containers(obj) if c["name"] == name)


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


def smp(doc: dict[str, Any], patch: Any, schema: dict[str, Any] | None = DEPLOYMENT
        ) -> dict[str, Any]:
    """Apply an SMP and check the inputs were left alone."""
    before_doc, before_patch = copy.deepcopy(doc), copy.deepcopy(patch)
    result = strategic_merge_patch(doc, patch, schema)
    assert doc == before_doc and patch == before_patch
    return result


def status_of(call: Any, *args: Any, **kwargs: Any) -> StatusError:
    with pytest.raises(StatusError) as info:
        call(*args, **kwargs)
    return info.value


# --- kubectl traffic -----------------------------------------------------------------------


def test_kubectl_set_image_changes_one_container_and_keeps_order() -> None:
    sent = (b'{"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"nginx"},'
            b'{"name":"echo"}],"containers":[{"image":"gihyodocker/echo:patched",'
            b'"name":"echo"}]}}}}')
    result = apply_patch(STRATEGIC_MERGE_PATCH, deployment(), sent, DEPLOYMENT)
    assert [c["name"] for c in containers(result)] == ["nginx", "echo"]
    assert container(result, "echo")["image"] == "gihyodocker/echo:patched"
    # merged by name: the rest of both containers is untouched
    assert container(result, "echo")["ports"] == container(deployment(), "echo")["ports"]
    assert container(result, "nginx") == container(deployment(), "nginx")


# `kubectl apply -f deploy.yaml --validate=false` on a live object whose last-applied
# configuration had replicas 2 (recorded as run apply-present--validate-false).
APPLY_PRESENT = (
    b'{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\\"api'
    b'Version\\":\\"apps/v1\\",\\"kind\\":\\"Deployment\\",\\"metadata\\":{\\"annotat'
    b'ions\\":{},\\"labels\\":{\\"app\\":\\"echo\\"},\\"name\\":\\"echo\\",\\"namesp'
    b'ace\\":\\"default\\"},\\"spec\\":{\\"replicas\\":3,\\"selector\\":{\\"matchLabe'
    b'ls\\":{\\"app\\":\\"echo\\"}},\\"template\\":{\\"metadata\\":{\\"labels\\":{'
    b'\\"app\\":\\"echo\\"}},\\"spec\\":{\\"containers\\":[{\\"image\\":\\"gihyodock'
    b'er/nginx:latest\\",\\"name\\":\\"nginx\\",\\"ports\\":[{\\"containerPort\\":80}'
    b']},{\\"image\\":\\"gihyodocker/echo:latest\\",\\"name\\":\\"echo\\",\\"ports\\"'
    b':[{\\"containerPort\\":8080}]}]}}}}\\n"}},"spec":{"replicas":3}}'
)


def test_kubectl_client_side_apply_patch() -> None:
    assert len(APPLY_PRESENT) == 622  # the size kubectl sent
    result = apply_patch(STRATEGIC_MERGE_PATCH, deployment(), APPLY_PRESENT, DEPLOYMENT,
                         field_validation="Ignore")
    assert result["spec"]["replicas"] == 3
    annotations = result["metadata"]["annotations"]
    assert set(annotations) == {"deployment.kubernetes.io/revision",
                                "kubectl.kubernetes.io/last-applied-configuration"}
    last_applied = json.loads(annotations["kubectl.kubernetes.io/last-applied-configuration"])
    assert last_applied["spec"]["replicas"] == 3
    assert containers(result) == containers(deployment())


def test_client_side_apply_removes_env_entry_and_port_and_changes_one_image() -> None:
    # What `kubectl apply` computes when the manifest drops env DEBUG and port 9090 and
    # bumps the echo image: deletions as `$patch: delete` items plus order directives.
    patch = {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "nginx"}, {"name": "echo"}],
        "containers": [
            {"$setElementOrder/env": [{"name": "BACKEND_HOST"}],
             "env": [{"$patch": "delete", "name": "DEBUG"}], "name": "nginx"},
            {"$setElementOrder/ports": [{"containerPort": 8080}],
             "image": "gihyodocker/echo:v2",
             "ports": [{"$patch": "delete", "containerPort": 9090}], "name": "echo"},
        ]}}}}
    result = smp(deployment(), patch)
    nginx, echo = containers(result)
    assert nginx == {
        "name": "nginx", "image": "gihyodocker/nginx:latest",
        "ports": [{"containerPort": 80, "protocol": "TCP"}],
        "env": [{"name": "BACKEND_HOST", "value": "localhost:8080"}],
    }
    assert echo == {"name": "echo", "image": "gihyodocker/echo:v2",
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}]}


def test_kubectl_patch_strategic_merges_container_by_name() -> None:
    sent = (b'{"spec":{"template":{"spec":{"containers":[{"name":"echo",'
            b'"image":"gihyodocker/echo:v2"}]}}}}')
    result = apply_patch(STRATEGIC_MERGE_PATCH, deployment(), sent, DEPLOYMENT)
    assert [c["image"] for c in containers(result)] == [
        "gihyodocker/nginx:latest", "gihyodocker/echo:v2"]


def test_kubectl_rollout_restart_adds_template_annotation() -> None:
    sent = (b'{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/'
            b'restartedAt":"2026-11-27T12:47:14Z"}}}}}')
    result = apply_patch(STRATEGIC_MERGE_PATCH, deployment(), sent, DEPLOYMENT)
    assert result["spec"]["template"]["metadata"] == {
        "labels": {"app": "echo"},
        "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-27T12:47:14Z"},
    }


def test_kubectl_edit_change_and_cordon() -> None:
    edited = apply_patch(STRATEGIC_MERGE_PATCH, deployment(), b'{"spec":{"replicas":7}}',
                         DEPLOYMENT, field_validation="Ignore")
    assert edited["spec"]["replicas"] == 7
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node1"},
            "spec": {"podCIDR": "10.0.0.0/24"}}
    cordoned = apply_patch(STRATEGIC_MERGE_PATCH, node, b'{"spec":{"unschedulable":true}}', NODE)
    assert cordoned["spec"] == {"podCIDR": "10.0.0.0/24", "unschedulable": True}


def test_kubectl_rollout_undo_json_patch() -> None:
    template = {"metadata": {"creationTimestamp": None, "labels": {"app": "echo"}},
                "spec": {"containers": [{"name": "echo", "image": "gihyodocker/echo:v1"}]}}
    annotations = {"deployment.kubernetes.io/revision": "2",
                   "kubernetes.io/change-cause": "kubectl create deployment echo"}
    sent = body([{"op": "replace", "path": "/spec/template", "value": template},
                 {"op": "replace", "path": "/metadata/annotations", "value": annotations}])
    result = apply_patch(JSON_PATCH, deployment(), sent, DEPLOYMENT)
    assert result["spec"]["template"] == template
    assert result["metadata"]["annotations"] == annotations
    assert result["spec"]["replicas"] == 2


def test_kubectl_label_annotate_patch_merge_and_json() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "simple-echo"}}
    labeled = apply_patch(MERGE_PATCH, pod, b'{"metadata":{"labels":{"a":"b"}}}', POD)
    annotated = apply_patch(MERGE_PATCH, labeled, b'{"metadata":{"annotations":{"note":"hello"}}}',
                            POD)
    assert annotated["metadata"] == {"name": "simple-echo", "labels": {"a": "b"},
                                     "annotations": {"note": "hello"}}
    merged = apply_patch(MERGE_PATCH, deployment(), b'{"spec":{"replicas":5}}', DEPLOYMENT)
    assert merged["spec"]["replicas"] == 5
    assert merged["spec"]["strategy"] == deployment()["spec"]["strategy"]
    patched = apply_patch(JSON_PATCH, deployment(),
                          b'[{"op":"replace","path":"/spec/replicas","value":6}]', DEPLOYMENT)
    assert patched["spec"]["replicas"] == 6


# --- strategic merge patch -----------------------------------------------------------------


def test_set_element_order_reorders_merged_list() -> None:
    patch = {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "echo"}, {"name": "nginx"}]}}}}
    result = smp(deployment(), patch)
    assert [c["name"] for c in containers(result)] == ["echo", "nginx"]
    assert containers(result)[0] == container(deployment(), "echo")


def test_set_element_order_places_new_item_where_told() -> None:
    patch = {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "nginx"}, {"name": "sidecar"}, {"name": "echo"}],
        "containers": [{"name": "sidecar", "image": "busybox"}]}}}}
    result = smp(deployment(), patch)
    assert [c["name"] for c in containers(result)] == ["nginx", "sidecar", "echo"]


def test_new_list_item_without_order_directive_goes_first_like_upstream() -> None:
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "b"}]}}}}
    result = smp(deployment(), patch)
    assert [c["name"] for c in containers(result)] == ["sidecar", "nginx", "echo"]


def test_retain_keys_on_strategy_drops_rolling_update() -> None:
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": None,
                                   "type": "Recreate"}}}
    assert smp(deployment(), patch)["spec"]["strategy"] == {"type": "Recreate"}
    # without the directive the stale rollingUpdate survives, as upstream (validation rejects it)
    plain = smp(deployment(), {"spec": {"strategy": {"type": "Recreate"}}})
    assert plain["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%",
                                                          "maxUnavailable": "25%"}


def test_retain_keys_in_merged_list_item_switches_volume_source() -> None:
    patch = {"spec": {"template": {"spec": {"volumes": [
        {"$retainKeys": ["name", "secret"], "name": "conf", "secret": {"secretName": "s"}}]}}}}
    result = smp(deployment(), patch)
    assert result["spec"]["template"]["spec"]["volumes"] == [
        {"name": "conf", "secret": {"secretName": "s"}}]


def test_patch_delete_directive_removes_list_item() -> None:
    patch = {"spec": {"template": {"spec": {"containers": [
        {"$patch": "delete", "name": "nginx"}]}}}}
    result = smp(deployment(), patch)
    assert [c["name"] for c in containers(result)] == ["echo"]


def test_patch_replace_directive_on_map_and_list() -> None:
    labels = smp(deployment(), {"metadata": {"labels": {"$patch": "replace", "new": "x"}}})
    assert labels["metadata"]["labels"] == {"new": "x"}
    replaced = smp(deployment(), {"spec": {"template": {"spec": {"containers": [
        {"name": "only", "image": "busybox"}, {"$patch": "replace"}]}}}})
    assert containers(replaced) == [{"name": "only", "image": "busybox"}]


def test_patch_delete_directive_on_map_empties_it() -> None:
    result = smp(deployment(), {"spec": {"strategy": {"$patch": "delete"}}})
    assert result["spec"]["strategy"] == {}


def test_null_deletes_label_and_unknown_null_is_ignored() -> None:
    result = smp(deployment(), {"metadata": {"labels": {"tier": None, "absent": None}}})
    assert result["metadata"]["labels"] == {"app": "echo"}


def test_primitive_list_with_merge_strategy_is_a_union() -> None:
    result = smp(deployment(), {"metadata": {"finalizers": ["example.com/b", "example.com/c"]}})
    assert result["metadata"]["finalizers"] == ["example.com/a", "example.com/b",
                                                "example.com/c"]


def test_primitive_union_order_and_delete_from_primitive_list() -> None:
    fresh = smp(deployment(), {"metadata": {"finalizers": ["example.com/z"]}})
    assert fresh["metadata"]["finalizers"] == ["example.com/z", "example.com/a", "example.com/b"]
    deleted = smp(deployment(), {"metadata": {
        "$deleteFromPrimitiveList/finalizers": ["example.com/a"]}})
    assert deleted["metadata"]["finalizers"] == ["example.com/b"]
    ordered = smp(deployment(), {"metadata": {
        "$setElementOrder/finalizers": ["example.com/b", "example.com/a", "example.com/c"],
        "finalizers": ["example.com/c"]}})
    assert ordered["metadata"]["finalizers"] == ["example.com/b", "example.com/a",
                                                 "example.com/c"]


def test_list_without_strategy_is_replaced() -> None:
    pod = {"spec": {"tolerations": [{"key": "a"}, {"key": "b"}],
                    "containers": [{"name": "c", "args": ["x", "y"]}]}}
    result = smp(pod, {"spec": {"tolerations": [{"key": "c"}],
                                "containers": [{"name": "c", "args": ["z"]}]}}, POD)
    assert result["spec"] == {"tolerations": [{"key": "c"}],
                              "containers": [{"name": "c", "args": ["z"]}]}


def test_replace_strategy_map_is_replaced() -> None:
    pdb = {"spec": {"selector": {"matchLabels": {"a": "1"}}, "minAvailable": 1}}
    result = smp(pdb, {"spec": {"selector": {"matchExpressions": [
        {"key": "b", "operator": "Exists"}]}}}, PDB)
    assert result["spec"] == {"selector": {"matchExpressions": [
        {"key": "b", "operator": "Exists"}]}, "minAvailable": 1}


def test_new_values_lose_directives_and_nulls() -> None:
    doc = {"metadata": {"name": "x"}, "spec": {}}
    patch = {"metadata": {"labels": {"a": "1", "b": None}},
             "spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "n"}],
                                            "containers": [{"name": "n", "env": None}]}}}}
    result = smp(doc, patch)
    assert result == {"metadata": {"name": "x", "labels": {"a": "1"}},
                      "spec": {"template": {"spec": {"containers": [{"name": "n"}]}}}}


def test_new_list_item_loses_directives_and_nulls() -> None:
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "sidecar", "image": "b", "resources": None,
         "$setElementOrder/env": [{"name": "X"}], "env": [{"name": "X", "value": "1"}]}]}}}}
    result = smp(deployment(), patch)
    assert container(result, "sidecar") == {"name": "sidecar", "image": "b",
                                            "env": [{"name": "X", "value": "1"}]}


def test_without_schema_maps_merge_and_lists_replace() -> None:
    doc = {"spec": {"a": {"x": 1, "y": 2}, "items": [{"name": "p"}, {"name": "q"}]}}
    result = smp(doc, {"spec": {"a": {"y": None, "z": 3}, "items": [{"name": "r"}]}}, None)
    assert result == {"spec": {"a": {"x": 1, "z": 3}, "items": [{"name": "r"}]}}


def test_null_smp_body_changes_nothing() -> None:
    assert apply_patch(STRATEGIC_MERGE_PATCH, deployment(), b"null", DEPLOYMENT) == deployment()


@pytest.mark.parametrize(("patch", "code", "message"), [
    ({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}, 500,
     "map: map[image:x] does not contain declared merge key: name"),
    ({"spec": {"strategy": {"$patch": "merge"}}}, 500,
     "unknown patch type: merge in map: map[$patch:merge]"),
    ({"spec": {"template": {"spec": {"containers": [{"$patch": "merge", "name": "echo"}]}}}},
     500, "merging lists cannot yet be specified in the patch"),
    ({"spec": {"strategy": {"$retainKeys": "type", "type": "Recreate"}}}, 400,
     "invalid patch format of retainKeys"),
    ({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}, 400,
     "invalid patch format of retainKeys"),
    ({"metadata": {"$deleteFromPrimitiveListfinalizers": ["a"]}}, 400,
     "invalid patch format of primitive list"),
    ({"metadata": {"finalizers": [["nested"]]}}, 500,
     "list element types are not identical: [[example.com/a example.com/b] [[nested]]]"),
    ({"metadata": {"finalizers": [1]}}, 500,
     "list element types are not identical: [[example.com/a example.com/b] [1]]"),
    ({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "nginx"}],
                                     "containers": [{"name": "echo", "image": "x"}]}}}}, 500,
     "the order in patch list:\n[map[image:x name:echo]]\n doesn't match $setElementOrder "
     "list:\n[map[name:nginx]]"),
])
def test_strategic_merge_patch_errors(patch: dict[str, Any], code: int, message: str) -> None:
    doc = deployment()
    error = status_of(apply_patch, STRATEGIC_MERGE_PATCH, doc, body(patch), DEPLOYMENT)
    assert (error.code, error.message) == (code, message)
    assert error.reason == {400: "BadRequest", 422: "Invalid", 500: ""}[code]
    assert doc == deployment()


def test_list_of_lists_is_a_bare_422() -> None:
    doc: dict[str, Any] = {"metadata": {"finalizers": []}}
    error = status_of(apply_patch, STRATEGIC_MERGE_PATCH, doc, b'{"metadata":{"finalizers":'
                      b'[["nested"]]}}', DEPLOYMENT)
    assert (error.code, error.reason, error.message) == (422, "Invalid", REJECTED)
    assert str(error.__cause__) == "lists of lists are not supported"


@pytest.mark.parametrize(("sent", "message"), [
    (b"", "unexpected end of JSON input"),
    (b"{not json", "invalid character 'n' looking for beginning of object key string"),
    (b'{"a":1,}', "invalid character '}' looking for beginning of object key string"),
    (b"[1,]", "invalid character ']' looking for beginning of value"),
    (b"[1", "unexpected end of JSON input"),
    (b'["x"]', "json: cannot unmarshal array into Go value of type map[string]interface {}"),
])
def test_strategic_merge_patch_undecodable_bodies(sent: bytes, message: str) -> None:
    error = status_of(apply_patch, STRATEGIC_MERGE_PATCH, deployment(), sent, DEPLOYMENT)
    assert (error.code, error.reason, error.message) == (400, "BadRequest", message)


# --- JSON merge patch ------------------------------------------------------------------------


def test_merge_patch_replaces_lists_and_deletes_with_null() -> None:
    doc = deployment()
    patch = {"metadata": {"labels": {"tier": None}, "finalizers": ["only"]},
             "spec": {"template": {"spec": {"containers": [{"name": "solo", "image": "x"}]}}}}
    result = merge_patch(doc, patch)
    assert doc == deployment()
    assert result["metadata"]["labels"] == {"app": "echo"}
    assert result["metadata"]["finalizers"] == ["only"]
    assert containers(result) == [{"name": "solo", "image": "x"}]
    assert result["spec"]["template"]["spec"]["volumes"] == [
        {"name": "conf", "configMap": {"name": "echo-conf"}}]


def test_merge_patch_object_over_scalar_drops_nulls() -> None:
    assert merge_patch({"a": "s"}, {"a": {"b": None, "c": {"d": None, "e": 1}}}) == {
        "a": {"c": {"e": 1}}}


@pytest.mark.parametrize(("sent", "validation", "code", "message"), [
    (b"null", "", 400, "Invalid JSON Patch"),
    (b'"text"', "Ignore", 400, "Invalid JSON Patch"),
    (b"{oops", "Ignore", 400, "Invalid JSON Patch"),
    (b"{oops", "Strict", 400,
     "error decoding patch: invalid character 'o' looking for beginning of object key string"),
    (b"[1]", "Warn", 400, "error decoding patch: json: cannot unmarshal array into Go value of "
                          "type map[string]interface {}"),
])
def test_merge_patch_bad_bodies(sent: bytes, validation: str, code: int, message: str) -> None:
    error = status_of(apply_patch, MERGE_PATCH, deployment(), sent, DEPLOYMENT,
                      field_validation=validation)
    assert (error.code, error.message) == (code, message)


def test_merge_patch_array_without_strict_decoding_is_invalid_object() -> None:
    error = status_of(apply_patch, MERGE_PATCH, deployment(), b"[1]", DEPLOYMENT,
                      field_validation="Ignore")
    assert (error.code, error.reason) == (422, "Invalid")
    assert error.message.startswith(' "" is invalid: patch: Invalid value: "[1]": '
                                    "couldn't get version/kind; json parse error")
    assert [c.field for c in error.causes] == ["patch"]


# --- JSON patch ------------------------------------------------------------------------------


def test_json_patch_all_operations() -> None:
    doc = deployment()
    ops = [
        {"op": "test", "path": "/spec/replicas", "value": 2},
        {"op": "add", "path": "/metadata/labels/new", "value": "v"},
        {"op": "add", "path": "/metadata/finalizers/-", "value": "example.com/c"},
        {"op": "add", "path": "/metadata/finalizers/0", "value": "example.com/first"},
        {"op": "remove", "path": "/metadata/labels/tier"},
        {"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": "e:2"},
        {"op": "move", "from": "/metadata/labels/new", "path": "/metadata/labels/moved"},
        {"op": "copy", "from": "/metadata/labels/app", "path": "/metadata/annotations/app"},
        {"op": "add", "path": "/metadata/annotations/a~1b", "value": "slash"},
        {"op": "remove", "path": "/metadata/finalizers/-1"},
        {"op": "test", "path": "/metadata/labels", "value": {"app": "echo", "moved": "v"}},
    ]
    before = copy.deepcopy(ops)
    result = json_patch(doc, ops)
    assert doc == deployment() and ops == before
    assert result["metadata"]["labels"] == {"app": "echo", "moved": "v"}
    assert result["metadata"]["finalizers"] == ["example.com/first", "example.com/a",
                                                "example.com/b"]
    assert result["metadata"]["annotations"] == {"deployment.kubernetes.io/revision": "3",
                                                 "app": "echo", "a/b": "slash"}
    assert container(result, "echo")["image"] == "e:2"


def test_json_patch_replace_of_missing_object_key_adds_it_like_upstream() -> None:
    result = json_patch({"spec": {}}, [{"op": "replace", "path": "/spec/paused", "value": True}])
    assert result == {"spec": {"paused": True}}


@pytest.mark.parametrize(("ops", "reason"), [
    ([{"op": "test", "path": "/spec/replicas", "value": 3}],
     "testing value /spec/replicas failed: test failed"),
    ([{"op": "test", "path": "/spec/replicas", "value": 2.0}],
     "testing value /spec/replicas failed: test failed"),
    ([{"op": "remove", "path": "/spec/nothing/here"}],
     'remove operation does not apply: doc is missing path: "/spec/nothing/here": missing value'),
    ([{"op": "remove", "path": "/metadata/labels/absent"}],
     "error in remove for path: '/metadata/labels/absent': Unable to remove nonexistent key: "
     "absent: missing value"),
    ([{"op": "add", "path": "/metadata/finalizers/9", "value": "x"}],
     "error in add for path: '/metadata/finalizers/9': Unable to access invalid index: 9: "
     "invalid index referenced"),
    ([{"op": "replace", "path": "/metadata/finalizers/x", "value": "x"}],
     "replace operation does not apply: doc is missing key: /metadata/finalizers/x: "
     "missing value"),
    ([{"op": "add", "value": 1}],
     "add operation failed to decode path: operation missing path field: missing value"),
    ([{"op": "frobnicate", "path": "/spec"}], "Unexpected kind: frobnicate"),
    ([{"path": "/spec"}], "Unexpected kind: unknown"),
])
def test_json_patch_failed_operation_is_a_bare_422(ops: list[Any], reason: str) -> None:
    """Upstream's choice (endpoints/handlers/patch.go, applyJSPatch): a body that does not
    decode as a patch is 400 BadRequest, but any operation that fails to apply -- a failed
    `test`, a bad path, a missing `path`, an unknown op -- is NewGenericServerResponse(422),
    i.e. reason Invalid with a fixed message and no causes."""
    doc = deployment()
    error = status_of(apply_patch, JSON_PATCH, doc, body(ops), DEPLOYMENT,
                      field_validation="Ignore")
    # upstream: NewGenericServerResponse(422, ...), which keeps none of the library's text
    assert (error.code, error.reason, error.message) == (422, "Invalid", REJECTED)
    assert error.message == "the server rejected our request due to an error in our request"
    assert isinstance(error.__cause__, JSONPatchOperationError)
    assert str(error.__cause__) == reason
    assert doc == deployment()


def test_json_patch_ops_after_a_failure_do_not_leak() -> None:
    doc = deployment()
    ops = [{"op": "replace", "path": "/spec/replicas", "value": 9},
           {"op": "test", "path": "/spec/replicas", "value": 2}]
    assert status_of(json_patch, doc, ops).code == 422
    assert doc["spec"]["replicas"] == 2


@pytest.mark.parametrize(("sent", "validation", "message"), [
    (b'{"op":"add"}', "", "error decoding patch: json: cannot unmarshal object into Go value of "
                          "type []handlers.jsonPatchOp"),
    (b'{"op":"add"}', "Ignore",
     "json: cannot unmarshal object into Go value of type jsonpatch.Patch"),
    (b"[1]", "Strict", "error decoding patch: json: cannot unmarshal number into Go value of "
                       "type handlers.jsonPatchOp"),
    (b"[1]", "Ignore", "json: cannot unmarshal number into Go value of type jsonpatch.Operation"),
    (b'[{"op":"add","path":3}]', "Warn", "error decoding patch: json: cannot unmarshal number "
                                         "into Go struct field jsonPatchOp.path of type string"),
    (b"[{]", "", "error decoding patch: invalid character ']' looking for beginning of object "
                 "key string"),
    (b"not json", "Ignore", "invalid character 'o' in literal null (expecting 'u')"),
    (b"tru", "Ignore", "unexpected end of JSON input"),
])
def test_json_patch_undecodable_bodies_are_400(sent: bytes, validation: str,
                                              message: str) -> None:
    error = status_of(apply_patch, JSON_PATCH, deployment(), sent, DEPLOYMENT,
                      field_validation=validation)
    assert (error.code, error.reason, error.message) == (400, "BadRequest", message)


def test_json_patch_null_body_is_empty_patch_and_too_many_ops_is_413() -> None:
    assert apply_patch(JSON_PATCH, deployment(), b"null", DEPLOYMENT) == deployment()
    ops = [{"op": "test", "path": "/spec/replicas", "value": 2}] * 10001
    error = status_of(json_patch, deployment(), ops)
    assert (error.code, error.reason) == (413, "RequestEntityTooLarge")
    assert error.message == ("Request entity too large: The allowed maximum operations in a JSON "
                             "patch is 10000, got 10001")
    assert json_patch(deployment(), ops[:10000]) == deployment()


def test_json_patch_replacing_root_with_array_is_invalid_object() -> None:
    error = status_of(json_patch, deployment(), [{"op": "replace", "path": "", "value": [1]}])
    assert (error.code, error.reason) == (422, "Invalid")
    assert error.causes[0].field == "patch"


# --- dispatch --------------------------------------------------------------------------------


def test_unsupported_content_types_are_415() -> None:
    for content_type in ("application/json", "application/apply-patch+yaml", "text/plain"):
        error = status_of(apply_patch, content_type, deployment(), b"{}", DEPLOYMENT)
        assert (error.code, error.reason) == (415, "UnsupportedMediaType")
        assert error.message == (
            "the body of the request was in an unknown format - accepted media types include: "
            "application/json-patch+json, application/merge-patch+json, "
            "application/strategic-merge-patch+json, application/apply-patch+yaml")
    custom = status_of(apply_patch, STRATEGIC_MERGE_PATCH, {}, b"{}", None,
                       allow_strategic=False)
    assert custom.code == 415 and "strategic" not in custom.message


def test_content_type_parameters_are_ignored() -> None:
    result = apply_patch("application/merge-patch+json; charset=utf-8", deployment(),
                         b'{"spec":{"replicas":1}}', DEPLOYMENT)
    assert result["spec"]["replicas"] == 1
