"""Networking, storage, RBAC, coordination, discovery, policy, scheduling, autoscaling."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from kubi.apiserver.registry import cluster  # noqa: F401  (registers the strategies)
from tests.apiserver.registry.test_core import SEED, create, update, valid

Obj = dict[str, Any]


# -- Ingress -----------------------------------------------------------------------------------


def ingress(**spec: Any) -> Obj:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "echo"}, "spec": spec}


def rule(path: Obj, host: str = "ch05.gihyo.local") -> Obj:
    return {"host": host, "http": {"paths": [path]}}


def backend(service_name: str = "echo", **port: Any) -> Obj:
    return {"service": {"name": service_name, "port": port or {"number": 80}}}


@pytest.mark.parametrize("manifest", ["simple-ingress.yml", "simple-ingress-mobile-redirect.yml"])
def test_seed_ingresses_validate_cleanly(manifest: str) -> None:
    obj = yaml.safe_load((SEED / manifest).read_text())
    created = valid(obj)
    assert created["metadata"]["generation"] == 1
    assert created["status"] == {"loadBalancer": {}}
    assert created["spec"] == obj["spec"]  # v1 Ingress has no spec defaults


@pytest.mark.parametrize(("spec", "expected"), [
    ({}, ["spec: Invalid value: []networking.IngressRule(nil): either `defaultBackend` or "
          "`rules` must be specified"]),
    ({"rules": [rule({"path": "/", "backend": backend()})]},
     ["spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified"]),
    ({"rules": [rule({"path": "/", "pathType": "Glob", "backend": backend()})]},
     ['spec.rules[0].http.paths[0].pathType: Unsupported value: "Glob": supported values: '
      '"Exact", "ImplementationSpecific", "Prefix"']),
    ({"rules": [rule({"path": "api", "pathType": "Prefix", "backend": backend()})]},
     ['spec.rules[0].http.paths[0].path: Invalid value: "api": must be an absolute path']),
    ({"rules": [rule({"path": "/a//b", "pathType": "Exact", "backend": backend()})]},
     ["spec.rules[0].http.paths[0].path: Invalid value: \"/a//b\": must not contain '//'"]),
    ({"rules": [rule({"path": "/", "pathType": "Prefix", "backend": {}})]},
     ['spec.rules[0].http.paths[0].backend: Invalid value: "": resource or service backend is '
      "required"]),
    ({"rules": [rule({"path": "/", "pathType": "Prefix",
                      "backend": {"service": {"name": "echo", "port": {}}}})]},
     ["spec.rules[0].http.paths[0].backend: Required value: port name or number is required"]),
    ({"rules": [rule({"path": "/", "pathType": "Prefix",
                      "backend": backend(number=80, name="http")})]},
     ['spec.rules[0].http.paths[0].backend: Invalid value: "": cannot set both port name & '
      "port number"]),
    ({"rules": [rule({"path": "/", "pathType": "Prefix", "backend": backend(number=70000)})]},
     ["spec.rules[0].http.paths[0].backend.service.port.number: Invalid value: 70000: must be "
      "between 1 and 65535, inclusive"]),
    ({"rules": [rule({"path": "/", "pathType": "Prefix", "backend": backend()},
                     host="10.0.0.1")]},
     ['spec.rules[0].host: Invalid value: "10.0.0.1": must be a DNS name, not an IP address']),
    ({"rules": [rule({"path": "/", "pathType": "Prefix", "backend": backend()},
                     host="*.*.example.com")]},
     ['spec.rules[0].host: Invalid value: "*.*.example.com": a wildcard DNS-1123 subdomain must '
      "start with '*.', followed by a valid DNS subdomain, which must consist of lower case "
      "alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. "
      "'*.example.com', regex used for validation is "
      "'\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"]),
    ({"rules": [{"host": "a.example.com", "http": {"paths": []}}]},
     ["spec.rules[0].http.paths: Required value"]),
    ({"defaultBackend": backend(), "tls": [{"hosts": ["Bad"], "secretName": "tls"}]},
     ['spec.tls[0].hosts[0]: Invalid value: "Bad": a lowercase RFC 1123 subdomain must consist '
      "of lower case alphanumeric characters, '-' or '.', and must start and end with an "
      "alphanumeric character (e.g. 'example.com', regex used for validation is "
      "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"]),
])
def test_ingress_rejects(spec: Obj, expected: list[str]) -> None:
    assert create(ingress(**spec))[1] == expected


def test_ingress_wildcard_host_is_accepted() -> None:
    valid(ingress(rules=[rule({"path": "/", "pathType": "Prefix", "backend": backend()},
                              host="*.example.com")]))


def test_ingress_generation_bumps_on_spec_change_only() -> None:
    old = valid(ingress(defaultBackend=backend()))
    same, errors = update(copy.deepcopy(old), old)
    assert errors == [] and same["metadata"]["generation"] == 1
    changed = copy.deepcopy(old)
    changed["spec"]["defaultBackend"] = backend("other")
    assert update(changed, old)[0]["metadata"]["generation"] == 2


def test_ingress_class_controller() -> None:
    klass = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
             "metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}
    old = valid(klass, namespaced=False)
    assert create(dict(klass, spec={"controller": "nginx"}), namespaced=False)[1] == [
        'spec.controller: Invalid value: "nginx": must be a domain-prefixed path (such as '
        '"acme.io/foo")']
    assert create(dict(klass, spec={}), namespaced=False)[1] == [
        "spec.controller: Required value"]
    changed = copy.deepcopy(old)
    changed["spec"]["controller"] = "example.com/other"
    assert update(changed, old)[1] == [
        'spec.controller: Invalid value: "example.com/other": field is immutable']


def test_network_policy_defaults_and_rules() -> None:
    policy: Obj = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                   "metadata": {"name": "np"},
                   "spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}}
    created = valid(policy)
    assert created["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert created["spec"]["egress"][0]["ports"] == [{"port": 53, "protocol": "TCP"}]
    policy["spec"]["ingress"] = [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]
    assert create(policy)[1] == [
        'spec.ingress[0].from[0].ipBlock.cidr: Invalid value: "10.0.0.0/33": must be a valid '
        "CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"]


# -- StorageClass ------------------------------------------------------------------------------


def test_storage_class_defaults_and_immutability() -> None:
    klass = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
             "metadata": {"name": "standard"}, "provisioner": "rancher.io/local-path"}
    created = valid(klass, namespaced=False)
    assert created["reclaimPolicy"] == "Delete"
    assert created["volumeBindingMode"] == "Immediate"
    assert create(dict(klass, provisioner=""), namespaced=False)[1] == [
        "provisioner: Required value"]
    assert create(dict(klass, reclaimPolicy="Recycle"), namespaced=False)[1] == [
        'reclaimPolicy: Unsupported value: "Recycle": supported values: "Delete", "Retain"']
    changed = copy.deepcopy(created)
    changed["provisioner"] = "example.com/other"
    changed["parameters"] = {"a": "b"}
    changed["volumeBindingMode"] = "WaitForFirstConsumer"
    assert update(changed, created)[1] == [
        "parameters: Forbidden: updates to parameters are forbidden.",
        "provisioner: Forbidden: updates to provisioner are forbidden.",
        'volumeBindingMode: Invalid value: "WaitForFirstConsumer": field is immutable',
    ]


# -- RBAC ------------------------------------------------------------------------------------


RBAC = "rbac.authorization.k8s.io/v1"


def test_role_rules() -> None:
    role = {"apiVersion": RBAC, "kind": "Role", "metadata": {"name": "reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}
    valid(role)
    role["rules"] = [{}, {"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]
    assert create(role)[1] == [
        "rules[0].verbs: Required value: verbs must contain at least one value",
        "rules[0].apiGroups: Required value: resource rules must supply at least one api group",
        "rules[0].resources: Required value: resource rules must supply at least one resource",
        'rules[1].nonResourceURLs: Invalid value: []string{"/healthz"}: namespaced rules cannot '
        "apply to non-resource URLs",
    ]


def test_cluster_role_allows_non_resource_urls() -> None:
    valid({"apiVersion": RBAC, "kind": "ClusterRole", "metadata": {"name": "system:health"},
           "rules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]}, namespaced=False)


def binding(kind: str = "RoleBinding", **fields: Any) -> Obj:
    obj = {"apiVersion": RBAC, "kind": kind, "metadata": {"name": "b"},
           "roleRef": {"kind": "Role", "name": "reader"},
           "subjects": [{"kind": "User", "name": "alice"},
                        {"kind": "ServiceAccount", "name": "default", "namespace": "default"}]}
    obj.update(fields)
    return obj


def test_binding_defaults_api_groups() -> None:
    created = valid(binding())
    assert created["roleRef"]["apiGroup"] == "rbac.authorization.k8s.io"
    assert created["subjects"][0]["apiGroup"] == "rbac.authorization.k8s.io"
    assert created["subjects"][1]["apiGroup"] == ""


def test_binding_rejects_bad_refs_and_subjects() -> None:
    bad = binding(roleRef={"kind": "Group", "name": "x"},
                  subjects=[{"kind": "Robot", "name": "r"}, {"kind": "ServiceAccount"}])
    assert create(bad)[1] == [
        'roleRef.kind: Unsupported value: "Group": supported values: "Role", "ClusterRole"',
        'subjects[0].kind: Unsupported value: "Robot": supported values: "ServiceAccount", '
        '"User", "Group"',
        "subjects[1].name: Required value",
    ]


def test_cluster_role_binding_needs_cluster_role_and_sa_namespace() -> None:
    bad = binding("ClusterRoleBinding", subjects=[{"kind": "ServiceAccount", "name": "sa"}])
    assert create(bad, namespaced=False)[1] == [
        'roleRef.kind: Unsupported value: "Role": supported values: "ClusterRole"',
        "subjects[0].namespace: Required value",
    ]


def test_role_ref_is_immutable() -> None:
    old = valid(binding())
    changed = copy.deepcopy(old)
    changed["roleRef"]["name"] = "writer"
    assert update(changed, old)[1] == [
        'roleRef: Invalid value: rbac.RoleRef{APIGroup:"rbac.authorization.k8s.io", Kind:"Role", '
        'Name:"writer"}: cannot change roleRef']


# -- Lease, EndpointSlice, PDB, PriorityClass, HPA -------------------------------------------


def test_lease_duration() -> None:
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"},
             "spec": {"holderIdentity": "a", "leaseDurationSeconds": 0}}
    assert create(lease)[1] == [
        "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"]


def test_endpoint_slice() -> None:
    eps = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": "echo-abc"}, "addressType": "IPv4",
           "endpoints": [{"addresses": ["10.1.0.5"]}], "ports": [{"port": 8080}]}
    created = valid(eps)
    assert created["ports"] == [{"port": 8080, "name": "", "protocol": "TCP"}]
    assert create(dict(eps, addressType=None))[1] == ["addressType: Required value"]
    assert create(dict(eps, endpoints=[{"addresses": ["fe80::1"]}]))[1] == [
        'endpoints[0].addresses[0]: Invalid value: "fe80::1": must be a valid IPv4 address']
    changed = dict(copy.deepcopy(created), addressType="IPv6",
                   endpoints=[{"addresses": ["fe80::1"]}])
    new, errors = update(changed, created)
    assert errors == ['addressType: Invalid value: "IPv6": field is immutable']
    assert new["metadata"]["generation"] == 2


def test_pod_disruption_budget() -> None:
    pdb: Obj = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "p"},
                "spec": {"minAvailable": "50%", "selector": {"matchLabels": {"app": "echo"}}}}
    created = valid(pdb)
    assert created["status"]["disruptionsAllowed"] == 0
    pdb["spec"].update(minAvailable="150%", maxUnavailable=1)
    assert create(pdb)[1] == [
        'spec: Invalid value: "": minAvailable and maxUnavailable cannot be both set',
        'spec.minAvailable: Invalid value: "150%": must not be greater than 100%',
    ]


def test_priority_class() -> None:
    klass = {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
             "metadata": {"name": "high"}, "value": 1000}
    created = valid(klass, namespaced=False)
    assert created["preemptionPolicy"] == "PreemptLowerPriority"
    assert create(dict(klass, value=2_000_000_000), namespaced=False)[1] == [
        "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"]
    changed = dict(copy.deepcopy(created), value=5)
    assert update(changed, created)[1] == ["value: Forbidden: may not be changed in an update."]


def test_hpa_v2_defaults_and_validation() -> None:
    hpa: Obj = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "echo"},
                "spec": {"maxReplicas": 5,
                         "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                            "name": "echo"}}}
    created = valid(hpa)
    assert created["spec"]["minReplicas"] == 1
    assert created["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
    assert created["status"] == {"desiredReplicas": 0}
    hpa["spec"].update(minReplicas=6)
    assert create(hpa)[1] == [
        "spec.maxReplicas: Invalid value: 5: must be greater than or equal to `minReplicas`"]
