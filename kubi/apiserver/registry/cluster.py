"""Strategies for the non-core kinds outside the workloads: networking, storage, RBAC,
coordination, discovery, policy, scheduling and autoscaling (upstream pkg/registry/*).

Defaults and rules follow each group's upstream `validation` package, with its
field paths and wording; metadata is validated by the store (registry.meta).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from kubi.api.errors import INVALID, Cause, forbidden, invalid, not_supported, required, too_long
from kubi.apiserver.registry import names
from kubi.apiserver.registry.core import validate_cidr, validate_port_num_or_name
from kubi.apiserver.registry.meta import as_dict, as_list, dig, immutable
from kubi.apiserver.registry.strategy import Obj, Strategy, register
from kubi.apiserver.selectors import validate_label_selector_dict

PROTOCOLS = ["SCTP", "TCP", "UDP"]


def _dicts(value: Any) -> list[Obj]:
    return [item for item in as_list(value) if isinstance(item, dict)]


def _messages(path: str, value: str, messages: list[str]) -> list[Cause]:
    return [invalid(path, value, message) for message in messages]


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------
# Ingress and IngressClass


PATH_TYPES = ["Exact", "ImplementationSpecific", "Prefix"]
_INVALID_PATH_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F")
_INVALID_PATH_SUFFIXES = ("/..", "/.")


def _validate_host(host: str, path: str) -> tuple[list[Cause], bool]:
    """A rule or TLS host: DNS subdomain or `*.` wildcard, never an IP."""
    causes: list[Cause] = []
    if _is_ip(host):
        causes.append(invalid(path, host, "must be a DNS name, not an IP address"))
    if "*" in host:
        return causes + _messages(path, host, names.wildcard_dns1123_subdomain(host)), True
    return causes + _messages(path, host, names.dns1123_subdomain(host)), False


def _validate_backend(backend: Obj, path: str) -> list[Cause]:
    service, resource = backend.get("service"), backend.get("resource")
    if service is not None and resource is not None:
        return [invalid(path, "", "cannot set both resource and service backends")]
    if isinstance(resource, dict):
        causes: list[Cause] = []
        if not resource.get("kind"):
            causes.append(required(f"{path}.resource.kind"))
        if not resource.get("name"):
            causes.append(required(f"{path}.resource.name"))
        return causes
    if not isinstance(service, dict):
        return [invalid(path, "", "resource or service backend is required")]
    causes = []
    name = str(service.get("name") or "")
    if not name:
        causes.append(required(f"{path}.service.name"))
    else:
        causes += _messages(f"{path}.service.name", name, names.dns1035_label(name))
    port = as_dict(service.get("port"))
    port_name, port_number = str(port.get("name") or ""), port.get("number") or 0
    if port_name and port_number:
        causes.append(invalid(path, "", "cannot set both port name & port number"))
    elif port_name:
        causes += _messages(f"{path}.service.port.name", port_name,
                            names.iana_svc_name(port_name))
    elif port_number:
        number = port_number if isinstance(port_number, int) else 0
        causes += [invalid(f"{path}.service.port.number", number, m)
                   for m in names.port_number(number)]
    else:
        causes.append(required(path, "port name or number is required"))
    return causes


def _validate_http_path(item: Obj, path: str) -> list[Cause]:
    path_type = item.get("pathType")
    if path_type is None:
        return [required(f"{path}.pathType", "pathType must be specified")]
    value = str(item.get("path") or "")
    causes: list[Cause] = []
    if path_type in ("Exact", "Prefix"):
        if not value.startswith("/"):
            causes.append(invalid(f"{path}.path", value, "must be an absolute path"))
        if value:
            causes += [invalid(f"{path}.path", value, f"must not contain '{seq}'")
                       for seq in _INVALID_PATH_SEQUENCES if seq in value]
            causes += [invalid(f"{path}.path", value, f"cannot end with '{suffix}'")
                       for suffix in _INVALID_PATH_SUFFIXES if value.endswith(suffix)]
    elif path_type == "ImplementationSpecific":
        if value and not value.startswith("/"):
            causes.append(invalid(f"{path}.path", value, "must be an absolute path"))
    else:
        causes.append(not_supported(f"{path}.pathType", path_type, PATH_TYPES))
    return causes + _validate_backend(as_dict(item.get("backend")), f"{path}.backend")


def validate_ingress_spec(spec: Obj) -> list[Cause]:
    causes: list[Cause] = []
    rules = _dicts(spec.get("rules"))
    default_backend = spec.get("defaultBackend")
    if not rules and default_backend is None:
        shown = "[]networking.IngressRule(nil)" if spec.get("rules") is None \
            else "[]networking.IngressRule{}"
        causes.append(Cause(INVALID, f"Invalid value: {shown}: either `defaultBackend` or "
                                     "`rules` must be specified", "spec"))
    if isinstance(default_backend, dict):
        causes += _validate_backend(default_backend, "spec.defaultBackend")
    for i, rule in enumerate(rules):
        here = f"spec.rules[{i}]"
        host = str(rule.get("host") or "")
        if host:
            host_causes, _wildcard = _validate_host(host, f"{here}.host")
            causes += host_causes
        http = rule.get("http")
        if isinstance(http, dict):
            paths = _dicts(http.get("paths"))
            if not paths:
                causes.append(required(f"{here}.http.paths"))
            for j, item in enumerate(paths):
                causes += _validate_http_path(item, f"{here}.http.paths[{j}]")
    for i, tls in enumerate(_dicts(spec.get("tls"))):
        for j, host in enumerate(as_list(tls.get("hosts"))):
            causes += _validate_host(str(host), f"spec.tls[{i}].hosts[{j}]")[0]
        secret = tls.get("secretName")
        if secret:
            causes += _messages(f"spec.tls[{i}].secretName", secret,
                                names.dns1123_subdomain(secret))
    class_name = spec.get("ingressClassName")
    if isinstance(class_name, str):
        causes += _messages("spec.ingressClassName", class_name,
                            names.dns1123_subdomain(class_name))
    return causes


@register("networking.k8s.io", "Ingress")
class IngressStrategy(Strategy):
    has_status = True
    tracks_generation = True

    def prepare_for_create(self, obj: Obj) -> None:
        super().prepare_for_create(obj)
        obj["status"] = {"loadBalancer": {}}

    def validate(self, obj: Obj) -> list[Cause]:
        return validate_ingress_spec(as_dict(obj.get("spec")))

    def validate_status_update(self, new: Obj, old: Obj) -> list[Cause]:
        causes: list[Cause] = []
        for i, entry in enumerate(_dicts(dig(new, "status", "loadBalancer", "ingress"))):
            here = f"status.loadBalancer.ingress[{i}]"
            ip = entry.get("ip")
            if ip and not _is_ip(str(ip)):
                causes.append(invalid(f"{here}.ip", ip, "must be a valid IP address"))
            hostname = entry.get("hostname")
            if hostname:
                causes += _messages(f"{here}.hostname", hostname,
                                    names.dns1123_subdomain(hostname))
                if _is_ip(str(hostname)):
                    causes.append(invalid(f"{here}.hostname", hostname,
                                          "must be a DNS name, not an IP address"))
        return causes


_DOMAIN_PATH = re.compile(r"[A-Za-z0-9/\-._~%!$&'()*+,;=:]+")
INGRESS_CLASS_CONTROLLER_MAX = 250


@register("networking.k8s.io", "IngressClass")
class IngressClassStrategy(Strategy):
    tracks_generation = True

    def validate(self, obj: Obj) -> list[Cause]:
        spec = as_dict(obj.get("spec"))
        controller = str(spec.get("controller") or "")
        path = "spec.controller"
        causes: list[Cause] = []
        if len(controller) > INGRESS_CLASS_CONTROLLER_MAX:
            causes.append(too_long(path, INGRESS_CLASS_CONTROLLER_MAX))
        if not controller:
            causes.append(required(path))
        else:
            host, slash, rest = controller.partition("/")
            if not slash or not host or not rest:
                causes.append(invalid(path, controller,
                                      'must be a domain-prefixed path (such as "acme.io/foo")'))
            else:
                causes += _messages(path, host, names.dns1123_subdomain(host))
                if not _DOMAIN_PATH.fullmatch(rest):
                    causes.append(invalid(path, rest, names.regex_error(
                        "Invalid path", _DOMAIN_PATH.pattern)))
        params = spec.get("parameters")
        if isinstance(params, dict):
            if not params.get("kind"):
                causes.append(required("spec.parameters.kind"))
            if not params.get("name"):
                causes.append(required("spec.parameters.name"))
            scope = params.get("scope")
            if scope is not None and scope not in ("Cluster", "Namespace"):
                causes.append(not_supported("spec.parameters.scope", scope,
                                            ["Cluster", "Namespace"]))
            if scope == "Namespace" and not params.get("namespace"):
                causes.append(required("spec.parameters.namespace",
                                       "`parameters.scope` is set to 'Namespace'"))
        return causes

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        return self.validate(new) + immutable("spec.controller", dig(new, "spec", "controller"),
                                              dig(old, "spec", "controller"))


# ---------------------------------------------------------------------------
# NetworkPolicy


@register("networking.k8s.io", "NetworkPolicy")
class NetworkPolicyStrategy(Strategy):
    tracks_generation = True

    def default(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        if not isinstance(spec, dict):
            return
        for direction in ("ingress", "egress"):
            for rule in _dicts(spec.get(direction)):
                for port in _dicts(rule.get("ports")):
                    port.setdefault("protocol", "TCP")
        if not spec.get("policyTypes"):
            types = ["Ingress"]
            if spec.get("egress"):
                types.append("Egress")
            spec["policyTypes"] = types

    def validate(self, obj: Obj) -> list[Cause]:
        spec = as_dict(obj.get("spec"))
        causes = validate_label_selector_dict(as_dict(spec.get("podSelector")),
                                              "spec.podSelector")
        for direction, peers_key in (("ingress", "from"), ("egress", "to")):
            for i, rule in enumerate(_dicts(spec.get(direction))):
                here = f"spec.{direction}[{i}]"
                for j, port in enumerate(_dicts(rule.get("ports"))):
                    port_path = f"{here}.ports[{j}]"
                    protocol = port.get("protocol")
                    if protocol is not None and protocol not in PROTOCOLS:
                        causes.append(not_supported(f"{port_path}.protocol", protocol,
                                                    PROTOCOLS))
                    if "port" in port:
                        causes += validate_port_num_or_name(port["port"], f"{port_path}.port")
                    end_port = port.get("endPort")
                    if isinstance(end_port, int):
                        start = port.get("port")
                        if not isinstance(start, int):
                            causes.append(required(f"{port_path}.port",
                                                   "must be specified when endPort is "
                                                   "specified"))
                        elif end_port < start:
                            causes.append(invalid(f"{port_path}.endPort", end_port,
                                                  "must be greater than or equal to `port`"))
                for j, peer in enumerate(_dicts(rule.get(peers_key))):
                    causes += self._validate_peer(peer, f"{here}.{peers_key}[{j}]")
        types = as_list(spec.get("policyTypes"))
        for i, policy_type in enumerate(types):
            if policy_type not in ("Egress", "Ingress"):
                causes.append(not_supported(f"spec.policyTypes[{i}]", policy_type,
                                            ["Egress", "Ingress"]))
        if len(types) > 2:
            causes.append(invalid("spec.policyTypes", str(types),
                                  "may not specify more than two policyTypes"))
        return causes

    @staticmethod
    def _validate_peer(peer: Obj, path: str) -> list[Cause]:
        present = [key for key in ("podSelector", "namespaceSelector", "ipBlock") if key in peer]
        if not present:
            return [required(path, "must specify a peer")]
        if "ipBlock" in peer and len(present) > 1:
            return [forbidden(path, "may not specify more than 1 peer type")]
        causes: list[Cause] = []
        for key in ("podSelector", "namespaceSelector"):
            if isinstance(peer.get(key), dict):
                causes += validate_label_selector_dict(peer[key], f"{path}.{key}")
        block = peer.get("ipBlock")
        if isinstance(block, dict):
            cidr = str(block.get("cidr") or "")
            if not cidr:
                causes.append(required(f"{path}.ipBlock.cidr"))
            else:
                causes += validate_cidr(f"{path}.ipBlock.cidr", cidr)
            for k, excluded in enumerate(as_list(block.get("except"))):
                causes += validate_cidr(f"{path}.ipBlock.except[{k}]", excluded)
        return causes


# ---------------------------------------------------------------------------
# StorageClass


STORAGE_RECLAIM_POLICIES = ["Delete", "Retain"]
BINDING_MODES = ["Immediate", "WaitForFirstConsumer"]
MAX_PARAMETERS_SIZE = 256 * 1024


@register("storage.k8s.io", "StorageClass")
class StorageClassStrategy(Strategy):
    def default(self, obj: Obj) -> None:
        obj.setdefault("reclaimPolicy", "Delete")
        obj.setdefault("volumeBindingMode", "Immediate")

    def validate(self, obj: Obj) -> list[Cause]:
        causes: list[Cause] = []
        provisioner = str(obj.get("provisioner") or "")
        if not provisioner:
            causes.append(required("provisioner"))
        else:
            causes += _messages("provisioner", provisioner.lower(),
                                names.qualified_name(provisioner.lower()))
        params = as_dict(obj.get("parameters"))
        total = 0
        for key in sorted(params):
            if not key:
                causes.append(invalid("parameters", key, "field can not be empty."))
            total += len(key) + len(str(params[key]))
        if total > MAX_PARAMETERS_SIZE:
            causes.append(too_long("parameters", MAX_PARAMETERS_SIZE))
        policy = obj.get("reclaimPolicy")
        if policy is not None and policy not in STORAGE_RECLAIM_POLICIES:
            causes.append(not_supported("reclaimPolicy", policy, STORAGE_RECLAIM_POLICIES))
        mode = obj.get("volumeBindingMode")
        if mode is None:
            causes.append(required("volumeBindingMode"))
        elif mode not in BINDING_MODES:
            causes.append(not_supported("volumeBindingMode", mode, BINDING_MODES))
        return causes

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        causes = self.validate(new)
        if (new.get("parameters") or {}) != (old.get("parameters") or {}):
            causes.append(forbidden("parameters", "updates to parameters are forbidden."))
        if new.get("provisioner") != old.get("provisioner"):
            causes.append(forbidden("provisioner", "updates to provisioner are forbidden."))
        if new.get("reclaimPolicy") != old.get("reclaimPolicy"):
            causes.append(forbidden("reclaimPolicy", "updates to reclaimPolicy are forbidden."))
        causes += immutable("volumeBindingMode", new.get("volumeBindingMode"),
                            old.get("volumeBindingMode"))
        return causes


# ---------------------------------------------------------------------------
# RBAC


RBAC_GROUP = "rbac.authorization.k8s.io"


def _validate_policy_rule(rule: Obj, namespaced: bool, path: str) -> list[Cause]:
    causes: list[Cause] = []
    if not as_list(rule.get("verbs")):
        causes.append(required(f"{path}.verbs", "verbs must contain at least one value"))
    urls = [str(u) for u in as_list(rule.get("nonResourceURLs"))]
    if urls:
        shown = "[]string{" + ", ".join(f'"{u}"' for u in urls) + "}"
        if namespaced:
            causes.append(Cause(INVALID, f"Invalid value: {shown}: namespaced rules cannot "
                                         "apply to non-resource URLs", f"{path}.nonResourceURLs"))
        if rule.get("apiGroups") or rule.get("resources") or rule.get("resourceNames"):
            causes.append(Cause(INVALID, f"Invalid value: {shown}: rules cannot apply to both "
                                         "regular resources and non-resource URLs",
                                f"{path}.nonResourceURLs"))
        return causes
    if not as_list(rule.get("apiGroups")):
        causes.append(required(f"{path}.apiGroups",
                               "resource rules must supply at least one api group"))
    if not as_list(rule.get("resources")):
        causes.append(required(f"{path}.resources",
                               "resource rules must supply at least one resource"))
    return causes


def _default_subjects(obj: Obj) -> None:
    for subject in _dicts(obj.get("subjects")):
        if not subject.get("apiGroup"):
            kind = subject.get("kind")
            if kind in ("User", "Group"):
                subject["apiGroup"] = RBAC_GROUP
            elif kind == "ServiceAccount":
                subject["apiGroup"] = ""
    role_ref = obj.get("roleRef")
    if isinstance(role_ref, dict) and not role_ref.get("apiGroup"):
        role_ref["apiGroup"] = RBAC_GROUP


def _validate_subject(subject: Obj, namespaced: bool, path: str) -> list[Cause]:
    causes: list[Cause] = []
    name = str(subject.get("name") or "")
    if not name:
        causes.append(required(f"{path}.name"))
    kind = subject.get("kind") or ""
    api_group = subject.get("apiGroup") or ""
    if kind == "ServiceAccount":
        if name:
            causes += _messages(f"{path}.name", name, names.dns1123_subdomain(name))
        if api_group:
            causes.append(not_supported(f"{path}.apiGroup", api_group, [""]))
        if not namespaced and not subject.get("namespace"):
            causes.append(required(f"{path}.namespace"))
    elif kind in ("User", "Group"):
        if api_group != RBAC_GROUP:
            causes.append(not_supported(f"{path}.apiGroup", api_group, [RBAC_GROUP]))
    else:
        causes.append(not_supported(f"{path}.kind", kind, ["ServiceAccount", "User", "Group"]))
    return causes


def _role_ref_text(ref: Any) -> str:
    ref = as_dict(ref)
    return (f'rbac.RoleRef{{APIGroup:"{ref.get("apiGroup", "")}", Kind:"{ref.get("kind", "")}", '
            f'Name:"{ref.get("name", "")}"}}')


class _BindingStrategy(Strategy):
    namespaced = True
    role_kinds: tuple[str, ...] = ("Role", "ClusterRole")

    def default(self, obj: Obj) -> None:
        _default_subjects(obj)

    def validate(self, obj: Obj) -> list[Cause]:
        causes: list[Cause] = []
        ref = as_dict(obj.get("roleRef"))
        api_group = ref.get("apiGroup") or ""
        if api_group != RBAC_GROUP:
            causes.append(not_supported("roleRef.apiGroup", api_group, [RBAC_GROUP]))
        kind = ref.get("kind") or ""
        if kind not in self.role_kinds:
            causes.append(not_supported("roleRef.kind", kind, list(self.role_kinds)))
        name = str(ref.get("name") or "")
        if not name:
            causes.append(required("roleRef.name"))
        else:
            causes += _messages("roleRef.name", name, names.path_segment_name(name))
        for i, subject in enumerate(_dicts(obj.get("subjects"))):
            causes += _validate_subject(subject, self.namespaced, f"subjects[{i}]")
        return causes

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        causes = self.validate(new)
        if new.get("roleRef") != old.get("roleRef"):
            causes.append(Cause(INVALID, f"Invalid value: {_role_ref_text(new.get('roleRef'))}: "
                                         "cannot change roleRef", "roleRef"))
        return causes


@register(RBAC_GROUP, "RoleBinding")
class RoleBindingStrategy(_BindingStrategy):
    pass


@register(RBAC_GROUP, "ClusterRoleBinding")
class ClusterRoleBindingStrategy(_BindingStrategy):
    namespaced = False
    role_kinds = ("ClusterRole",)


@register(RBAC_GROUP, "Role")
class RoleStrategy(Strategy):
    def validate(self, obj: Obj) -> list[Cause]:
        causes: list[Cause] = []
        for i, rule in enumerate(_dicts(obj.get("rules"))):
            causes += _validate_policy_rule(rule, True, f"rules[{i}]")
        return causes


@register(RBAC_GROUP, "ClusterRole")
class ClusterRoleStrategy(Strategy):
    def validate(self, obj: Obj) -> list[Cause]:
        causes: list[Cause] = []
        for i, rule in enumerate(_dicts(obj.get("rules"))):
            causes += _validate_policy_rule(rule, False, f"rules[{i}]")
        aggregation = obj.get("aggregationRule")
        if isinstance(aggregation, dict):
            selectors = _dicts(aggregation.get("clusterRoleSelectors"))
            if not selectors:
                causes.append(required("aggregationRule.clusterRoleSelectors",
                                       "at least one clusterRoleSelector required if "
                                       "aggregationRule is non-nil"))
            for i, selector in enumerate(selectors):
                causes += validate_label_selector_dict(
                    selector, f"aggregationRule.clusterRoleSelectors[{i}]")
        return causes


# ---------------------------------------------------------------------------
# Lease, EndpointSlice


@register("coordination.k8s.io", "Lease")
class LeaseStrategy(Strategy):
    def validate(self, obj: Obj) -> list[Cause]:
        spec = as_dict(obj.get("spec"))
        causes: list[Cause] = []
        duration = spec.get("leaseDurationSeconds")
        if isinstance(duration, int) and duration <= 0:
            causes.append(invalid("spec.leaseDurationSeconds", duration,
                                  "must be greater than 0"))
        transitions = spec.get("leaseTransitions")
        if isinstance(transitions, int) and transitions < 0:
            causes.append(invalid("spec.leaseTransitions", transitions,
                                  "must be greater than or equal to 0"))
        strategy = spec.get("strategy")
        if strategy is not None and strategy != "OldestEmulationVersion":
            causes.append(not_supported("spec.strategy", strategy, ["OldestEmulationVersion"]))
        return causes


ADDRESS_TYPES = ["FQDN", "IPv4", "IPv6"]
MAX_SLICE_ENDPOINTS = 1000
MAX_SLICE_PORTS = 100


@register("discovery.k8s.io", "EndpointSlice")
class EndpointSliceStrategy(Strategy):
    tracks_generation = True

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        # No spec: any change other than metadata bumps the generation.
        generation = old["metadata"].get("generation", 1)
        strip = ("metadata",)
        if {k: v for k, v in new.items() if k not in strip} != \
                {k: v for k, v in old.items() if k not in strip}:
            generation += 1
        new["metadata"]["generation"] = generation

    def default(self, obj: Obj) -> None:
        for port in _dicts(obj.get("ports")):
            port.setdefault("name", "")
            port.setdefault("protocol", "TCP")

    def validate(self, obj: Obj) -> list[Cause]:
        causes: list[Cause] = []
        address_type = obj.get("addressType") or ""
        if not address_type:
            causes.append(required("addressType"))
        elif address_type not in ADDRESS_TYPES:
            causes.append(not_supported("addressType", address_type, ADDRESS_TYPES))
        endpoints = _dicts(obj.get("endpoints"))
        if len(endpoints) > MAX_SLICE_ENDPOINTS:
            causes.append(too_long("endpoints", MAX_SLICE_ENDPOINTS))
        for i, endpoint in enumerate(endpoints):
            causes += self._validate_endpoint(endpoint, str(address_type), f"endpoints[{i}]")
        causes += self._validate_ports(_dicts(obj.get("ports")))
        return causes

    @staticmethod
    def _validate_endpoint(endpoint: Obj, address_type: str, path: str) -> list[Cause]:
        causes: list[Cause] = []
        addresses = [str(a) for a in as_list(endpoint.get("addresses"))]
        if not addresses:
            causes.append(required(f"{path}.addresses", "must contain at least 1 address"))
        elif len(addresses) > 100:
            causes.append(too_long(f"{path}.addresses", 100))
        for i, address in enumerate(addresses):
            here = f"{path}.addresses[{i}]"
            if address_type == "IPv4":
                if not _is_ip(address) or ":" in address:
                    causes.append(invalid(here, address, "must be a valid IPv4 address"))
            elif address_type == "IPv6":
                if not _is_ip(address) or ":" not in address:
                    causes.append(invalid(here, address, "must be a valid IPv6 address"))
            elif address_type == "FQDN":
                causes += _messages(here, address, names.dns1123_subdomain(address))
        hostname = endpoint.get("hostname")
        if isinstance(hostname, str):
            causes += _messages(f"{path}.hostname", hostname, names.dns1123_label(hostname))
        node_name = endpoint.get("nodeName")
        if isinstance(node_name, str):
            causes += _messages(f"{path}.nodeName", node_name,
                                names.dns1123_subdomain(node_name))
        return causes

    @staticmethod
    def _validate_ports(ports: list[Obj]) -> list[Cause]:
        causes: list[Cause] = []
        if len(ports) > MAX_SLICE_PORTS:
            causes.append(too_long("ports", MAX_SLICE_PORTS))
        seen: set[str] = set()
        for i, port in enumerate(ports):
            here = f"ports[{i}]"
            name = str(port.get("name") or "")
            if name:
                causes += _messages(f"{here}.name", name, names.dns1123_label(name))
            if name in seen:
                causes.append(Cause("FieldValueDuplicate", f'Duplicate value: "{name}"',
                                    f"{here}.name"))
            seen.add(name)
            protocol = port.get("protocol")
            if protocol is None:
                causes.append(required(f"{here}.protocol"))
            elif protocol not in PROTOCOLS:
                causes.append(not_supported(f"{here}.protocol", protocol, PROTOCOLS))
            number = port.get("port")
            if isinstance(number, int):
                causes += [invalid(f"{here}.port", number, m) for m in names.port_number(number)]
            app_protocol = port.get("appProtocol")
            if isinstance(app_protocol, str):
                causes += _messages(f"{here}.appProtocol", app_protocol,
                                    names.qualified_name(app_protocol))
        return causes

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        return self.validate(new) + immutable("addressType", new.get("addressType"),
                                              old.get("addressType"))


# ---------------------------------------------------------------------------
# PodDisruptionBudget


UNHEALTHY_POD_EVICTION_POLICIES = ["AlwaysAllow", "IfHealthyBudget"]


def validate_int_or_percent(value: Any, path: str) -> list[Cause]:
    """Upstream ValidatePositiveIntOrPercent plus IsNotMoreThan100Percent."""
    if isinstance(value, str):
        if not re.fullmatch(r"[0-9]+%", value):
            return [invalid(path, value, names.regex_error(
                "a valid percent string must be a numeric string followed by an ending '%'",
                "[0-9]+%", "1%", "93%"))]
        if int(value[:-1]) > 100:
            return [invalid(path, value, "must not be greater than 100%")]
        return []
    if isinstance(value, int) and value < 0:
        return [invalid(path, value, "must be greater than or equal to 0")]
    return []


@register("policy", "PodDisruptionBudget")
class PodDisruptionBudgetStrategy(Strategy):
    has_status = True
    tracks_generation = True

    def prepare_for_create(self, obj: Obj) -> None:
        super().prepare_for_create(obj)
        obj["status"] = {"currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0,
                         "expectedPods": 0}

    def validate(self, obj: Obj) -> list[Cause]:
        spec = as_dict(obj.get("spec"))
        causes: list[Cause] = []
        min_available, max_unavailable = spec.get("minAvailable"), spec.get("maxUnavailable")
        if min_available is not None and max_unavailable is not None:
            causes.append(invalid("spec", "", "minAvailable and maxUnavailable cannot be both "
                                              "set"))
        if min_available is not None:
            causes += validate_int_or_percent(min_available, "spec.minAvailable")
        if max_unavailable is not None:
            causes += validate_int_or_percent(max_unavailable, "spec.maxUnavailable")
        selector = spec.get("selector")
        if isinstance(selector, dict):
            causes += validate_label_selector_dict(selector, "spec.selector")
        policy = spec.get("unhealthyPodEvictionPolicy")
        if policy is not None and policy not in UNHEALTHY_POD_EVICTION_POLICIES:
            causes.append(not_supported("spec.unhealthyPodEvictionPolicy", policy,
                                        UNHEALTHY_POD_EVICTION_POLICIES))
        return causes

    def validate_status_update(self, new: Obj, old: Obj) -> list[Cause]:
        status = as_dict(new.get("status"))
        causes: list[Cause] = []
        for key in ("disruptionsAllowed", "currentHealthy", "desiredHealthy", "expectedPods"):
            value = status.get(key)
            if isinstance(value, int) and value < 0:
                causes.append(invalid(f"status.{key}", value,
                                      "must be greater than or equal to 0"))
        return causes


# ---------------------------------------------------------------------------
# PriorityClass


HIGHEST_USER_PRIORITY = 1_000_000_000
SYSTEM_PRIORITY_CLASSES = {"system-node-critical": 2_000_001_000,
                           "system-cluster-critical": 2_000_000_000}
PREEMPTION_POLICIES = ["Never", "PreemptLowerPriority"]


@register("scheduling.k8s.io", "PriorityClass")
class PriorityClassStrategy(Strategy):
    def default(self, obj: Obj) -> None:
        obj.setdefault("preemptionPolicy", "PreemptLowerPriority")

    def validate(self, obj: Obj) -> list[Cause]:
        causes: list[Cause] = []
        name = str(dig(obj, "metadata", "name") or "")
        value = obj.get("value")
        if name.startswith("system-"):
            known = SYSTEM_PRIORITY_CLASSES.get(name)
            if known is None:
                problem = f"{name} is not a known system priority class"
            elif value != known:
                problem = f"value of {name} PriorityClass must be {known}"
            elif obj.get("globalDefault"):
                problem = "globalDefault must be false"
            else:
                problem = ""
            if problem:
                causes.append(forbidden("metadata.name",
                                        "priority class names with 'system-' prefix are "
                                        f"reserved for system use only. error: {problem}"))
        elif isinstance(value, int) and value > HIGHEST_USER_PRIORITY:
            causes.append(forbidden("value", "maximum allowed value of a user defined priority "
                                             f"is {HIGHEST_USER_PRIORITY}"))
        policy = obj.get("preemptionPolicy")
        if policy is not None and policy not in PREEMPTION_POLICIES:
            causes.append(not_supported("preemptionPolicy", policy, PREEMPTION_POLICIES))
        return causes

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        causes = self.validate(new)
        if new.get("value") != old.get("value"):
            causes.append(forbidden("value", "may not be changed in an update."))
        causes += immutable("preemptionPolicy", new.get("preemptionPolicy"),
                            old.get("preemptionPolicy"))
        return causes


# ---------------------------------------------------------------------------
# HorizontalPodAutoscaler (autoscaling/v2 and v1 on the wire)


DEFAULT_CPU_UTILIZATION = 80


def _default_behavior(behavior: Obj) -> None:
    up = behavior.setdefault("scaleUp", {})
    if isinstance(up, dict):
        up.setdefault("stabilizationWindowSeconds", 0)
        up.setdefault("selectPolicy", "Max")
        up.setdefault("policies", [{"type": "Pods", "value": 4, "periodSeconds": 15},
                                   {"type": "Percent", "value": 100, "periodSeconds": 15}])
    down = behavior.setdefault("scaleDown", {})
    if isinstance(down, dict):
        down.setdefault("selectPolicy", "Max")
        down.setdefault("policies", [{"type": "Percent", "value": 100, "periodSeconds": 15}])


@register("autoscaling", "HorizontalPodAutoscaler")
class HorizontalPodAutoscalerStrategy(Strategy):
    has_status = True

    def default(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        if not isinstance(spec, dict):
            return
        spec.setdefault("minReplicas", 1)
        if obj.get("apiVersion") == "autoscaling/v1":
            return
        if not spec.get("metrics"):
            spec["metrics"] = [{"type": "Resource", "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION},
            }}]
        if isinstance(spec.get("behavior"), dict):
            _default_behavior(spec["behavior"])

    def prepare_for_create(self, obj: Obj) -> None:
        super().prepare_for_create(obj)
        obj["status"] = {"desiredReplicas": 0} if obj.get("apiVersion") != "autoscaling/v1" \
            else {"currentReplicas": 0, "desiredReplicas": 0}

    def validate(self, obj: Obj) -> list[Cause]:
        spec = as_dict(obj.get("spec"))
        causes: list[Cause] = []
        min_replicas, max_replicas = spec.get("minReplicas"), spec.get("maxReplicas")
        if isinstance(min_replicas, int) and min_replicas < 1:
            causes.append(invalid("spec.minReplicas", min_replicas,
                                  "must be greater than or equal to 1"))
        if not isinstance(max_replicas, int) or max_replicas < 1:
            causes.append(invalid("spec.maxReplicas", max_replicas or 0,
                                  "must be greater than 0"))
        elif isinstance(min_replicas, int) and max_replicas < min_replicas:
            causes.append(invalid("spec.maxReplicas", max_replicas,
                                  "must be greater than or equal to `minReplicas`"))
        ref = as_dict(spec.get("scaleTargetRef"))
        for key in ("kind", "name"):
            value = str(ref.get(key) or "")
            if not value:
                causes.append(required(f"spec.scaleTargetRef.{key}"))
            else:
                causes += _messages(f"spec.scaleTargetRef.{key}", value,
                                    names.path_segment_name(value))
        target = spec.get("targetCPUUtilizationPercentage")
        if isinstance(target, int) and target < 1:
            causes.append(invalid("spec.targetCPUUtilizationPercentage", target,
                                  "must be greater than 0"))
        for i, metric in enumerate(_dicts(spec.get("metrics"))):
            causes += self._validate_metric(metric, f"spec.metrics[{i}]")
        return causes

    @staticmethod
    def _validate_metric(metric: Obj, path: str) -> list[Cause]:
        kinds = {"ContainerResource": "containerResource", "External": "external",
                 "Object": "object", "Pods": "pods", "Resource": "resource"}
        metric_type = metric.get("type") or ""
        if not metric_type:
            return [required(f"{path}.type", "must specify a metric source type")]
        if metric_type not in kinds:
            return [not_supported(f"{path}.type", metric_type, sorted(kinds))]
        source = metric.get(kinds[metric_type])
        if not isinstance(source, dict):
            return [required(f"{path}.{kinds[metric_type]}",
                             "must populate information for the given metric source")]
        target = as_dict(source.get("target"))
        target_type = target.get("type")
        target_path = f"{path}.{kinds[metric_type]}.target"
        if target_type not in ("AverageValue", "Utilization", "Value"):
            return [not_supported(f"{target_path}.type", target_type or "",
                                  ["AverageValue", "Utilization", "Value"])]
        utilization = target.get("averageUtilization")
        if isinstance(utilization, int) and utilization <= 0:
            return [invalid(f"{target_path}.averageUtilization", utilization,
                            "must be greater than 0")]
        return []


__all__ = [
    "ClusterRoleBindingStrategy", "ClusterRoleStrategy", "EndpointSliceStrategy",
    "HorizontalPodAutoscalerStrategy", "IngressClassStrategy", "IngressStrategy",
    "LeaseStrategy", "NetworkPolicyStrategy", "PodDisruptionBudgetStrategy",
    "PriorityClassStrategy", "RoleBindingStrategy", "RoleStrategy", "StorageClassStrategy",
    "validate_ingress_spec", "validate_int_or_percent",
]
