"""Core/v1 non-workload strategies: defaults, create and update validation."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubi.api.errors import cause_text
from kubi.apiserver.registry import core  # noqa: F401  (registers the strategies)
from kubi.apiserver.registry.meta import (
    name_rule_for,
    validate_object_meta,
    validate_object_meta_update,
)
from kubi.apiserver.registry.strategy import strategy_for

SEED = Path("/work/shared/seed/manifests")
Obj = dict[str, Any]


def kind_of(obj: Obj) -> tuple[str, str]:
    api_version = obj.get("apiVersion", "v1")
    group = api_version.split("/")[0] if "/" in api_version else ""
    return group, obj["kind"]


def create(obj: Obj, namespaced: bool = True) -> tuple[Obj, list[str]]:
    """What the store does on create: default, prepare, validate meta and object."""
    obj = copy.deepcopy(obj)
    obj.setdefault("metadata", {})
    if namespaced:
        obj["metadata"].setdefault("namespace", "default")
    group, kind = kind_of(obj)
    strategy = strategy_for(group, kind)
    strategy.default(obj)
    strategy.prepare_for_create(obj)
    causes = validate_object_meta(obj["metadata"], namespaced=namespaced,
                                  name_rule=name_rule_for(group, kind), is_create=True)
    causes += strategy.validate(obj)
    return obj, [cause_text(c) for c in causes]


def update(new: Obj, old: Obj) -> tuple[Obj, list[str]]:
    new = copy.deepcopy(new)
    group, kind = kind_of(new)
    strategy = strategy_for(group, kind)
    strategy.default(new)
    strategy.prepare_for_update(new, old)
    causes = validate_object_meta_update(new["metadata"], old["metadata"])
    causes += strategy.validate_update(new, old)
    return new, [cause_text(c) for c in causes]


def valid(obj: Obj, namespaced: bool = True) -> Obj:
    created, errors = create(obj, namespaced)
    assert errors == []
    return created


def seed(name: str) -> Obj:
    loaded: Obj = yaml.safe_load((SEED / name).read_text())
    return loaded


# -- Service -------------------------------------------------------------------------------


def service(**spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"}, "spec": spec}


def test_seed_cluster_ip_service_defaults_as_a_real_cluster() -> None:
    created = valid(seed("simple-service.yml"))
    assert created["spec"] == {
        "selector": {"app": "echo", "release": "summer"},
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80}],
        "type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
        "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"],
    }
    assert created["status"] == {"loadBalancer": {}}


def test_seed_node_port_service_defaults() -> None:
    created = valid(seed("simple-service-nodeport.yml"))
    assert created["spec"]["type"] == "NodePort"
    assert created["spec"]["externalTrafficPolicy"] == "Cluster"
    assert created["spec"]["ports"][0] == {"name": "http", "port": 80, "protocol": "TCP",
                                           "targetPort": 80}


def test_seed_external_name_service_defaults() -> None:
    created = valid(seed("externalname-service.yml"))
    assert created["spec"] == {"type": "ExternalName", "externalName": "gihyo.jp",
                               "sessionAffinity": "None"}


def test_allocated_cluster_ip_is_mirrored_into_cluster_ips() -> None:
    created = valid(service(clusterIP="10.96.0.10", ports=[{"port": 53, "protocol": "UDP"}]))
    assert created["spec"]["clusterIPs"] == ["10.96.0.10"]
    headless = valid(service(clusterIP="None", ports=[{"port": 80}]))
    assert headless["spec"]["ipFamilyPolicy"] == "RequireDualStack"  # no selector
    assert valid(service(clusterIP="None", selector={"a": "b"}))["spec"][
        "ipFamilyPolicy"] == "SingleStack"


@pytest.mark.parametrize(("spec", "expected"), [
    ({}, ["spec.ports: Required value"]),
    ({"type": "ExternalName"}, ["spec.externalName: Required value"]),
    ({"type": "ExternalName", "externalName": "Bad_Name"},
     ['spec.externalName: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must '
      "consist of lower case alphanumeric characters, '-' or '.', and must start and end with "
      "an alphanumeric character (e.g. 'example.com', regex used for validation is "
      "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"]),
    ({"ports": [{"port": 0}]},
     ["spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
      "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive"]),
    ({"ports": [{"port": 80}, {"port": 81}]},
     ["spec.ports[0].name: Required value", "spec.ports[1].name: Required value"]),
    ({"ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]},
     ['spec.ports[1].name: Duplicate value: "a"']),
    ({"ports": [{"port": 80, "protocol": "HTTP"}]},
     ['spec.ports[0].protocol: Unsupported value: "HTTP": supported values: "SCTP", "TCP", '
      '"UDP"']),
    ({"ports": [{"port": 80, "targetPort": "HTTP"}]},
     ['spec.ports[0].targetPort: Invalid value: "HTTP": must contain only alpha-numeric '
      "characters (a-z, 0-9), and hyphens (-)",
      'spec.ports[0].targetPort: Invalid value: "HTTP": must contain at least one letter (a-z)']),
    ({"type": "Magic", "ports": [{"port": 80}]},
     ['spec.type: Unsupported value: "Magic": supported values: "ClusterIP", "ExternalName", '
      '"LoadBalancer", "NodePort"']),
    ({"ports": [{"port": 80, "nodePort": 30080}]},
     ["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]),
    ({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]},
     ["spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The "
      "range of valid ports is 30000-32767"]),
    ({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]},
     ["spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort "
      "services"]),
    ({"clusterIP": "10.0.0.300", "ports": [{"port": 80}]},
     ['spec.clusterIPs[0]: Invalid value: "10.0.0.300": must be a valid IP address, (e.g. '
      "10.9.8.7 or 2001:db8::ffff)"]),
    ({"sessionAffinity": "Sticky", "ports": [{"port": 80}]},
     ['spec.sessionAffinity: Unsupported value: "Sticky": supported values: "ClientIP", '
      '"None"']),
    ({"externalTrafficPolicy": "Local", "ports": [{"port": 80}]},
     ['spec.externalTrafficPolicy: Invalid value: "Local": may only be set for '
      "externally-accessible services"]),
])
def test_service_rejects(spec: Obj, expected: list[str]) -> None:
    assert create(service(**spec))[1] == expected


def test_service_port_duplicate_shows_go_struct() -> None:
    (text,) = create(service(ports=[{"name": "a", "port": 80}, {"name": "b", "port": 80}]))[1]
    assert text == ('spec.ports[1]: Duplicate value: core.ServicePort{Name:"", Protocol:"TCP", '
                    "AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, "
                    'IntVal:0, StrVal:""}, NodePort:0}')


def test_service_client_ip_affinity_defaults_timeout() -> None:
    created = valid(service(sessionAffinity="ClientIP", ports=[{"port": 80}]))
    assert created["spec"]["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}


def test_service_cluster_ip_may_not_change() -> None:
    old = valid(service(clusterIP="10.96.0.5", ports=[{"port": 80}]))
    old["metadata"]["resourceVersion"] = "1"
    changed = copy.deepcopy(old)
    changed["spec"]["clusterIP"] = "10.96.0.6"
    changed["spec"]["clusterIPs"] = ["10.96.0.6"]
    assert update(changed, old)[1] == [
        'spec.clusterIPs[0]: Invalid value: []string{"10.96.0.6"}: may not change once set']


def test_service_update_without_cluster_ip_keeps_allocated_values() -> None:
    old = valid(service(type="NodePort", clusterIP="10.96.0.5",
                        ports=[{"name": "http", "port": 80, "nodePort": 30080}]))
    applied = service(type="NodePort", ports=[{"name": "http", "port": 80}])
    applied["metadata"] = copy.deepcopy(old["metadata"])
    new, errors = update(applied, old)
    assert errors == []
    assert new["spec"]["clusterIPs"] == ["10.96.0.5"]
    assert new["spec"]["ports"][0]["nodePort"] == 30080
    assert new["status"] == {"loadBalancer": {}}


def test_service_type_change_to_cluster_ip_drops_node_ports() -> None:
    old = valid(service(type="NodePort", clusterIP="10.96.0.5",
                        ports=[{"port": 80, "nodePort": 30080}]))
    new_obj = copy.deepcopy(old)
    new_obj["spec"]["type"] = "ClusterIP"
    new, errors = update(new_obj, old)
    assert errors == []
    assert "nodePort" not in new["spec"]["ports"][0]
    assert "externalTrafficPolicy" not in new["spec"]


# -- Namespace, Node -------------------------------------------------------------------------


def test_namespace_defaults() -> None:
    created = valid({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev"}},
                    namespaced=False)
    assert created["spec"] == {"finalizers": ["kubernetes"]}
    assert created["status"] == {"phase": "Active"}
    assert created["metadata"]["labels"] == {"kubernetes.io/metadata.name": "dev"}


def test_namespace_name_is_a_label_and_finalizers_are_checked() -> None:
    _, errors = create({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": "a.b"}, "spec": {"finalizers": ["custom"]}},
                       namespaced=False)
    assert errors == [
        'metadata.name: Invalid value: "a.b": must not contain dots',
        'spec.finalizers: Invalid value: "custom": name is neither a standard finalizer name '
        "nor is it fully qualified",
    ]


def test_namespace_update_keeps_spec_finalizers() -> None:
    old = valid({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev"}},
                namespaced=False)
    new_obj = copy.deepcopy(old)
    new_obj["spec"]["finalizers"] = []
    new, errors = update(new_obj, old)
    assert errors == []
    assert new["spec"]["finalizers"] == ["kubernetes"]


def test_node_keeps_status_and_defaults_allocatable() -> None:
    created = valid({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"},
                     "status": {"capacity": {"cpu": "4"}}}, namespaced=False)
    assert created["status"] == {"capacity": {"cpu": "4"}, "allocatable": {"cpu": "4"}}


def test_node_taint_effect() -> None:
    _, errors = create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"},
                        "spec": {"taints": [{"key": "k", "effect": "Sometimes"}]}},
                       namespaced=False)
    assert errors == ['spec.taints[0].effect: Unsupported value: "Sometimes": supported values: '
                      '"NoExecute", "NoSchedule", "PreferNoSchedule"']


# -- ConfigMap, Secret -----------------------------------------------------------------------


def configmap(**fields: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, **fields}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_configmap_keys_overlap_and_size() -> None:
    assert create(configmap(data={"a.conf": "x"}, binaryData={"b": b64("y")}))[1] == []
    _, errors = create(configmap(data={"a b": "x", "k": "1"}, binaryData={"k": b64("2")}))
    assert errors == [
        "data[a b]: Invalid value: \"a b\": a valid config key must consist of alphanumeric "
        "characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex "
        "used for validation is '[-._a-zA-Z0-9]+')",
        'data[k]: Invalid value: "k": duplicate of key present in binaryData',
        'binaryData[k]: Invalid value: "k": duplicate of key present in data',
    ]
    assert create(configmap(data={"big": "x" * (1024 * 1024 + 1)}))[1] == [
        "Too long: may not be more than 1048576 bytes"]


def test_immutable_configmap_freezes_data() -> None:
    old = valid(configmap(data={"a": "1"}, immutable=True))
    changed = copy.deepcopy(old)
    changed["data"] = {"a": "2"}
    changed["immutable"] = False
    assert update(changed, old)[1] == [
        "immutable: Forbidden: field is immutable when `immutable` is set",
        "data: Forbidden: field is immutable when `immutable` is set",
    ]
    assert update(copy.deepcopy(old), old)[1] == []


def secret(**fields: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, **fields}


def test_secret_defaults_type_and_merges_string_data() -> None:
    created = valid(secret(data={"a": b64("1")}, stringData={"a": "2", "b": "3"}))
    assert created["type"] == "Opaque"
    assert created["data"] == {"a": b64("2"), "b": b64("3")}
    assert "stringData" not in created


@pytest.mark.parametrize(("secret_type", "data", "expected"), [
    ("kubernetes.io/tls", {}, ["data[tls.crt]: Required value", "data[tls.key]: Required value"]),
    ("kubernetes.io/basic-auth", {},
     ["data[username]: Required value", "data[password]: Required value"]),
    ("kubernetes.io/ssh-auth", {}, ["data[ssh-privatekey]: Required value"]),
    ("kubernetes.io/dockerconfigjson", {}, ["data[.dockerconfigjson]: Required value"]),
    ("kubernetes.io/service-account-token", {},
     ["metadata.annotations[kubernetes.io/service-account.name]: Required value"]),
])
def test_secret_type_required_keys(secret_type: str, data: Obj, expected: list[str]) -> None:
    assert create(secret(type=secret_type, data=data))[1] == expected


def test_secret_docker_config_must_be_json() -> None:
    _, errors = create(secret(type="kubernetes.io/dockerconfigjson",
                              data={".dockerconfigjson": b64("not json")}))
    assert len(errors) == 1
    assert errors[0].startswith(
        'data[.dockerconfigjson]: Invalid value: "<secret contents redacted>": ')
    good = b64('{"auths": {}}')
    assert create(secret(type="kubernetes.io/dockerconfigjson",
                         data={".dockerconfigjson": good}))[1] == []


def test_secret_type_is_immutable() -> None:
    old = valid(secret(data={"a": b64("1")}))
    changed = copy.deepcopy(old)
    changed["type"] = "kubernetes.io/basic-auth"
    changed["data"] = {"username": b64("u")}
    assert update(changed, old)[1] == [
        'type: Invalid value: "kubernetes.io/basic-auth": field is immutable']


# -- PV, PVC ---------------------------------------------------------------------------------


def pv(**spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv1"},
            "spec": spec}


def test_pv_defaults_and_pending_phase() -> None:
    created = valid(pv(capacity={"storage": "1Gi"}, accessModes=["ReadWriteOnce"],
                       hostPath={"path": "/data"}), namespaced=False)
    assert created["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert created["spec"]["volumeMode"] == "Filesystem"
    assert created["spec"]["hostPath"] == {"path": "/data", "type": ""}
    assert created["status"]["phase"] == "Pending"
    assert created["status"]["lastPhaseTransitionTime"].endswith("Z")


def test_pv_requires_capacity_modes_and_one_source() -> None:
    assert create(pv(), namespaced=False)[1] == [
        "spec.accessModes: Required value",
        "spec.capacity: Required value",
        "spec: Required value: must specify a volume type",
    ]
    _, errors = create(pv(capacity={"storage": "1Gi"}, accessModes=["ReadWriteSometimes"],
                          hostPath={"path": "/a"}, nfs={"server": "s", "path": "/b"}),
                       namespaced=False)
    assert errors == [
        'spec.accessModes: Unsupported value: "ReadWriteSometimes": supported values: '
        '"ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"',
        "spec.nfs: Forbidden: may not specify more than 1 volume type",
    ]


def test_pv_source_is_immutable() -> None:
    old = valid(pv(capacity={"storage": "1Gi"}, accessModes=["ReadWriteOnce"],
                   hostPath={"path": "/data"}), namespaced=False)
    changed = copy.deepcopy(old)
    changed["spec"]["hostPath"]["path"] = "/other"
    assert update(changed, old)[1] == [
        "spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is immutable "
        "after creation"]


def pvc(**spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
            "spec": spec}


def test_pvc_defaults_and_required_fields() -> None:
    created = valid(pvc(accessModes=["ReadWriteOnce"],
                        resources={"requests": {"storage": "1Gi"}}))
    assert created["spec"]["volumeMode"] == "Filesystem"
    assert created["status"] == {"phase": "Pending"}
    assert create(pvc())[1] == [
        "spec.accessModes: Required value: at least 1 access mode is required",
        "spec.resources[storage]: Required value",
    ]


def test_pvc_spec_is_immutable_except_binding_and_bound_resize() -> None:
    old = valid(pvc(accessModes=["ReadWriteOnce"], resources={"requests": {"storage": "1Gi"}}))
    bind = copy.deepcopy(old)
    bind["spec"]["volumeName"] = "pv1"
    assert update(bind, old)[1] == []
    grow = copy.deepcopy(old)
    grow["spec"]["resources"]["requests"]["storage"] = "2Gi"
    assert update(grow, old)[1] == [
        "spec: Forbidden: spec is immutable after creation except resources.requests for bound "
        "claims"]
    bound_old = copy.deepcopy(old)
    bound_old["status"] = {"phase": "Bound"}
    grow["status"] = {"phase": "Bound"}
    assert update(grow, bound_old)[1] == []
    shrink = copy.deepcopy(bound_old)
    shrink["spec"]["resources"]["requests"]["storage"] = "512Mi"
    assert update(shrink, bound_old)[1] == [
        "spec.resources.requests.storage: Forbidden: field can not be less than previous value"]


# -- Events, quota, limits -------------------------------------------------------------------


def test_core_event_is_lenient() -> None:
    event: Obj = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
             "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
             "reason": "Started"}
    assert create(event)[1] == []
    event["involvedObject"]["namespace"] = "other"
    assert create(event)[1] == [
        'involvedObject.namespace: Invalid value: "other": does not match event.namespace']


def test_core_event_with_event_time_needs_reporting_fields() -> None:
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
             "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
             "eventTime": "2024-05-01T10:00:00.000000Z"}
    # Upstream also runs the qualified-name check on the empty controller name.
    assert create(event)[1] == [
        "reportingComponent: Required value",
        'reportingComponent: Invalid value: "": name part must be non-empty',
        'reportingComponent: Invalid value: "": name part must consist of alphanumeric '
        "characters, '-', '_' or '.', and must start and end with an alphanumeric character "
        "(e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
        "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
        "reportingInstance: Required value",
        "action: Required value",
        "reason: Required value",
    ]


def test_events_v1_strict_rules() -> None:
    event = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e1"},
             "regarding": {"kind": "Pod", "name": "p", "namespace": "default"},
             "eventTime": "2024-05-01T10:00:00.000000Z", "reportingController": "kubi.io/x",
             "reportingInstance": "i", "action": "Pulling", "reason": "Pulling",
             "type": "Normal"}
    assert create(event)[1] == []
    bad = dict(event, type="Odd", deprecatedCount=3)
    assert create(bad)[1] == ['type: Invalid value: "": has invalid value: Odd',
                              'count: Invalid value: "": needs to be unset']
    old = valid(event)
    old["metadata"]["resourceVersion"] = "1"
    changed = dict(copy.deepcopy(old), note="new")
    assert update(changed, old)[1] == ['message: Invalid value: "new": field is immutable']


def test_resource_quota_and_limit_range() -> None:
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
             "spec": {"hard": {"pods": "-1"}}}
    assert create(quota)[1] == [
        'spec.hard[pods]: Invalid value: "-1": must be greater than or equal to 0']
    created = valid({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "l"},
                     "spec": {"limits": [{"type": "Container", "max": {"cpu": "1"}}]}})
    assert created["spec"]["limits"][0] == {"type": "Container", "max": {"cpu": "1"},
                                            "default": {"cpu": "1"},
                                            "defaultRequest": {"cpu": "1"}}


def test_endpoints_addresses_and_ports() -> None:
    endpoints = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "echo"},
                 "subsets": [{"addresses": [{"ip": "10.1.0.5"}], "ports": [{"port": 8080}]}]}
    created = valid(endpoints)
    assert created["subsets"][0]["ports"] == [{"port": 8080, "protocol": "TCP"}]
    endpoints["subsets"] = [{"addresses": [{"ip": "nope"}]}, {}]
    assert create(endpoints)[1] == [
        'subsets[0].addresses[0].ip: Invalid value: "nope": must be a valid IP address, (e.g. '
        "10.9.8.7 or 2001:db8::ffff)",
        "subsets[1]: Required value: must specify `addresses` or `notReadyAddresses`",
    ]
