"""Pod spec defaulting and validation shared by Pods and every pod template.

Defaults follow upstream's `core/v1/defaults.go` (what a real cluster returns on
read-back); validation follows `core/validation` with upstream's field paths and
wording. Admission-time defaults (service account, priority, tolerations) only
apply to real Pods and live in `pods.py`.
"""

from __future__ import annotations

import json
import re
from fractions import Fraction
from typing import Any

from kubi.api.errors import (
    INVALID,
    Cause,
    duplicate,
    forbidden,
    invalid,
    not_supported,
    required,
)
from kubi.apiserver.registry import meta, names
from kubi.apiserver.selectors import label_selector_from_dict

Obj = dict[str, Any]

NOT_FOUND = "FieldValueNotFound"

RESTART_POLICIES = ["Always", "OnFailure", "Never"]
# Upstream lists these from a sorted set.
DNS_POLICIES = ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"]
PULL_POLICIES = ["Always", "IfNotPresent", "Never"]
PORT_PROTOCOLS = ["SCTP", "TCP", "UDP"]
TERMINATION_MESSAGE_POLICIES = ["File", "FallbackToLogsOnError"]
TOLERATION_OPERATORS = ["Equal", "Exists"]
TAINT_EFFECTS = ["NoSchedule", "PreferNoSchedule", "NoExecute"]
HOST_PATH_TYPES = ["", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File",
                   "FileOrCreate", "Socket"]
STANDARD_CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")
MAX_INT32 = 2**31 - 1

_NONNEGATIVE = "must be greater than or equal to 0"
_QUANTITY_RE = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
_QUANTITY_MSG = ("quantities must match the regular expression "
                 "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
_BINARY_SUFFIXES = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL_SUFFIXES = {"n": -3, "u": -2, "m": -1, "": 0, "k": 1, "M": 2, "G": 3, "T": 4, "P": 5,
                     "E": 6}
_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")
_VOLUME_SOURCES = (
    "hostPath", "emptyDir", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "secret",
    "nfs", "iscsi", "glusterfs", "persistentVolumeClaim", "rbd", "flexVolume", "cinder",
    "cephfs", "flocker", "downwardAPI", "fc", "azureFile", "configMap", "vsphereVolume",
    "quobyte", "azureDisk", "photonPersistentDisk", "projected", "portworxVolume", "scaleIO",
    "storageos", "csi", "ephemeral", "image",
)


# --- quantities -------------------------------------------------------------------------------


def parse_quantity(value: Any) -> Fraction:
    """A resource.Quantity ("100m", "1Gi", "1e3", "0.5", or a JSON number) as an exact number."""
    if isinstance(value, bool):
        raise ValueError(_QUANTITY_MSG)
    if isinstance(value, int | float):
        return Fraction(value)
    if not isinstance(value, str):
        raise ValueError(_QUANTITY_MSG)
    match = _QUANTITY_RE.match(value)
    if not match:
        raise ValueError(_QUANTITY_MSG)
    number, suffix = match.groups()
    if number.count(".") > 1 or number.strip("+-") in ("", "."):
        raise ValueError(_QUANTITY_MSG)
    amount = Fraction(number)
    if suffix in _BINARY_SUFFIXES:
        return amount * 1024 ** _BINARY_SUFFIXES[suffix]
    if suffix in _DECIMAL_SUFFIXES:
        return amount * Fraction(1000) ** _DECIMAL_SUFFIXES[suffix]
    exponent = re.fullmatch(r"[eE]([-+]?[0-9]+)", suffix)
    if exponent:
        return amount * Fraction(10) ** int(exponent.group(1))
    raise ValueError(_QUANTITY_MSG)


def format_quantity(value: Any) -> str:
    """Upstream's canonical form: binary suffixes stay binary, others become decimal SI."""
    amount = parse_quantity(value)
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if isinstance(value, str) and value.endswith(tuple(_BINARY_SUFFIXES)) and \
            amount.denominator == 1 and amount >= 1024:
        for suffix, power in sorted(_BINARY_SUFFIXES.items(), key=lambda kv: -kv[1]):
            if amount % 1024**power == 0:
                return f"{sign}{amount // 1024**power}{suffix}"
    # Round up to whole nano-units, as upstream does, then pick the largest exact suffix.
    nanos = -(-amount * 10**9 // 1)
    for suffix, power in sorted(_DECIMAL_SUFFIXES.items(), key=lambda kv: -kv[1]):
        scale = 10 ** (9 + 3 * power)
        if nanos % scale == 0:
            return f"{sign}{int(nanos // scale)}{suffix}"
    return f"{sign}{nanos}n"


# --- Go-style value rendering (what upstream prints for maps and selectors) -------------------


def go_string_map(values: dict[str, str] | None) -> str:
    if values is None:
        return "map[string]string(nil)"
    items = ", ".join(f"{json.dumps(k)}:{json.dumps(values[k])}" for k in sorted(values))
    return "map[string]string{" + items + "}"


def go_label_selector(selector: Obj | None) -> str:
    """`%#v` of a metav1.LabelSelector, as upstream prints it in selector causes."""
    if selector is None:
        return "null"
    expressions = selector.get("matchExpressions")
    if expressions is None:
        shown = "[]v1.LabelSelectorRequirement(nil)"
    else:
        parts = []
        for req in expressions:
            values = req.get("values")
            values_shown = ("[]string(nil)" if values is None else
                            "[]string{" + ", ".join(json.dumps(v) for v in values) + "}")
            parts.append(f"v1.LabelSelectorRequirement{{Key:{json.dumps(req.get('key', ''))}, "
                         f"Operator:{json.dumps(req.get('operator', ''))}, "
                         f"Values:{values_shown}}}")
        shown = "[]v1.LabelSelectorRequirement{" + ", ".join(parts) + "}"
    return (f"v1.LabelSelector{{MatchLabels:{go_string_map(selector.get('matchLabels'))}, "
            f"MatchExpressions:{shown}}}")


def invalid_shown(path: str, shown: str, detail: str) -> Cause:
    """An Invalid cause whose value is already rendered (Go structs, maps)."""
    return Cause(INVALID, f"Invalid value: {shown}: {detail}", path)


def not_found_cause(path: str, value: Any) -> Cause:
    return Cause(NOT_FOUND, f"Not found: {json.dumps(value)}", path)


def nonnegative(value: Any, path: str) -> list[Cause]:
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        return [invalid(path, value, _NONNEGATIVE)]
    return []


def show_any(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# --- defaulting -------------------------------------------------------------------------------


def default_pull_policy(image: str) -> str:
    """Always for `:latest` or an untagged image, else IfNotPresent (digests count as pinned)."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _default_handler(handler: Obj) -> None:
    http_get = handler.get("httpGet")
    if isinstance(http_get, dict):
        http_get.setdefault("path", "/")
        http_get.setdefault("scheme", "HTTP")
    grpc = handler.get("grpc")
    if isinstance(grpc, dict):
        grpc.setdefault("service", "")


def _default_probe(probe: Obj) -> None:
    probe.setdefault("timeoutSeconds", 1)
    probe.setdefault("periodSeconds", 10)
    probe.setdefault("successThreshold", 1)
    probe.setdefault("failureThreshold", 3)
    _default_handler(probe)


def _default_field_ref(holder: Obj) -> None:
    field_ref = holder.get("fieldRef")
    if isinstance(field_ref, dict):
        field_ref.setdefault("apiVersion", "v1")


def _default_container(container: Obj) -> None:
    image = container.get("image")
    if isinstance(image, str) and image:
        container.setdefault("imagePullPolicy", default_pull_policy(image))
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})
    for port in _dicts(container.get("ports")):
        port.setdefault("protocol", "TCP")
    for env in _dicts(container.get("env")):
        value_from = env.get("valueFrom")
        if isinstance(value_from, dict):
            _default_field_ref(value_from)
    for probe_name in _PROBES:
        probe = container.get(probe_name)
        if isinstance(probe, dict):
            _default_probe(probe)
    lifecycle = container.get("lifecycle")
    if isinstance(lifecycle, dict):
        for hook in ("postStart", "preStop"):
            if isinstance(lifecycle.get(hook), dict):
                _default_handler(lifecycle[hook])


def _default_volume(volume: Obj) -> None:
    if not any(source in volume for source in _VOLUME_SOURCES):
        volume["emptyDir"] = {}
    for source in ("configMap", "secret", "projected", "downwardAPI"):
        if isinstance(volume.get(source), dict):
            volume[source].setdefault("defaultMode", 420)
    if isinstance(volume.get("hostPath"), dict):
        volume["hostPath"].setdefault("type", "")
    for item in _dicts((volume.get("downwardAPI") or {}).get("items")):
        _default_field_ref(item)
    for projection in _dicts((volume.get("projected") or {}).get("sources")):
        for item in _dicts((projection.get("downwardAPI") or {}).get("items")):
            _default_field_ref(item)
        token = projection.get("serviceAccountToken")
        if isinstance(token, dict):
            token.setdefault("expirationSeconds", 3600)


def default_pod_spec(spec: Obj) -> None:
    """Upstream's SetDefaults_PodSpec and friends, in place."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    # v1 mirrors the deprecated serviceAccount field from serviceAccountName.
    if spec.get("serviceAccountName"):
        spec["serviceAccount"] = spec["serviceAccountName"]
    elif spec.get("serviceAccount"):
        spec["serviceAccountName"] = spec["serviceAccount"]
    for container in _dicts(spec.get("initContainers")) + _dicts(spec.get("containers")):
        _default_container(container)
    for volume in _dicts(spec.get("volumes")):
        _default_volume(volume)


def default_pod_template(template: Obj) -> None:
    """A template as a real cluster returns it: pod defaults plus `creationTimestamp: null`."""
    metadata = template.setdefault("metadata", {})
    if isinstance(metadata, dict):
        metadata.setdefault("creationTimestamp", None)
    spec = template.get("spec")
    if isinstance(spec, dict):
        default_pod_spec(spec)


# --- validation -------------------------------------------------------------------------------


def _dicts(value: Any) -> list[Obj]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _validate_volume_source(volume: Obj, path: str) -> list[Cause]:
    causes: list[Cause] = []
    sources = [source for source in _VOLUME_SOURCES if volume.get(source) is not None]
    if not sources:
        return [required(path, "must specify a volume type")]
    for extra in sources[1:]:
        causes.append(forbidden(f"{path}.{extra}", "may not specify more than 1 volume type"))
    source = sources[0]
    body = volume[source]
    if not isinstance(body, dict):
        return causes
    src_path = f"{path}.{source}"
    if source in ("configMap", "secret", "projected", "downwardAPI"):
        mode = body.get("defaultMode")
        if isinstance(mode, int) and not 0 <= mode <= 0o777:
            causes.append(invalid(f"{src_path}.defaultMode", mode,
                                  "must be a number between 0 and 0777 (octal), both inclusive"))
    if source == "configMap" and not body.get("name"):
        causes.append(required(f"{src_path}.name", ""))
    if source == "secret" and not body.get("secretName"):
        causes.append(required(f"{src_path}.secretName", ""))
    if source == "persistentVolumeClaim" and not body.get("claimName"):
        causes.append(required(f"{src_path}.claimName", ""))
    if source == "hostPath":
        if not body.get("path"):
            causes.append(required(f"{src_path}.path", ""))
        host_type = body.get("type", "")
        if host_type not in HOST_PATH_TYPES:
            causes.append(not_supported(f"{src_path}.type", host_type, HOST_PATH_TYPES))
    return causes


def _validate_volumes(volumes: list[Obj], path: str) -> tuple[list[Cause], set[str]]:
    causes: list[Cause] = []
    seen: set[str] = set()
    for index, volume in enumerate(volumes):
        volume_path = f"{path}[{index}]"
        causes.extend(_validate_volume_source(volume, volume_path))
        name = _str(volume.get("name"))
        if not name:
            causes.append(required(f"{volume_path}.name", ""))
        else:
            causes.extend(invalid(f"{volume_path}.name", name, msg)
                          for msg in names.dns1123_label(name))
        if name in seen:
            causes.append(duplicate(f"{volume_path}.name", name))
        seen.add(name)
    return causes, seen


def _validate_port_num_or_name(port: Any, path: str) -> list[Cause]:
    if isinstance(port, int) and not isinstance(port, bool):
        return [invalid(path, port, msg) for msg in names.port_number(port)]
    if isinstance(port, str) and port:
        return [invalid(path, port, msg) for msg in names.iana_svc_name(port)]
    return [required(path, "")]


def _validate_handler(handler: Obj, path: str) -> list[Cause]:
    present = [name for name in _HANDLERS if handler.get(name) is not None]
    if not present:
        return [required(path, "must specify a handler type")]
    causes = [forbidden(f"{path}.{name}", "may not specify more than 1 handler type")
              for name in present[1:]]
    kind = present[0]
    body = handler[kind]
    if not isinstance(body, dict):
        return causes
    if kind == "exec" and not body.get("command"):
        causes.append(required(f"{path}.exec.command", ""))
    if kind in ("httpGet", "tcpSocket"):
        causes.extend(_validate_port_num_or_name(body.get("port"), f"{path}.{kind}.port"))
    if kind == "httpGet":
        scheme = body.get("scheme", "HTTP")
        if scheme not in ("HTTP", "HTTPS"):
            causes.append(not_supported(f"{path}.httpGet.scheme", scheme, ["HTTP", "HTTPS"]))
    if kind == "grpc":
        causes.extend(invalid(f"{path}.grpc.port", body.get("port"), msg)
                      for msg in names.port_number(body.get("port") or 0))
    return causes


def _validate_probe(probe: Obj, path: str, must_succeed_once: bool) -> list[Cause]:
    causes = _validate_handler(probe, path)
    for key in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold",
                "failureThreshold"):
        causes.extend(nonnegative(probe.get(key), f"{path}.{key}"))
    success = probe.get("successThreshold")
    if must_succeed_once and isinstance(success, int) and success != 1:
        causes.append(invalid(f"{path}.successThreshold", success, "must be 1"))
    return causes


def _validate_ports(ports: list[Obj], path: str, host_network: bool) -> list[Cause]:
    causes: list[Cause] = []
    seen_names: set[str] = set()
    for index, port in enumerate(ports):
        port_path = f"{path}[{index}]"
        name = _str(port.get("name"))
        if name:
            causes.extend(invalid(f"{port_path}.name", name, msg)
                          for msg in names.iana_svc_name(name))
            if name in seen_names:
                causes.append(duplicate(f"{port_path}.name", name))
            seen_names.add(name)
        container_port = port.get("containerPort", 0)
        if not container_port:
            causes.append(required(f"{port_path}.containerPort", ""))
        else:
            causes.extend(invalid(f"{port_path}.containerPort", container_port, msg)
                          for msg in names.port_number(container_port))
        host_port = port.get("hostPort", 0)
        if host_port:
            causes.extend(invalid(f"{port_path}.hostPort", host_port, msg)
                          for msg in names.port_number(host_port))
            if host_network and host_port != container_port:
                causes.append(invalid(f"{port_path}.containerPort", container_port,
                                      "must match `hostPort` when `hostNetwork` is true"))
        protocol = port.get("protocol", "")
        if not protocol:
            causes.append(required(f"{port_path}.protocol", ""))
        elif protocol not in PORT_PROTOCOLS:
            causes.append(not_supported(f"{port_path}.protocol", protocol, PORT_PROTOCOLS))
    return causes


def _validate_env(env: list[Obj], path: str) -> list[Cause]:
    causes: list[Cause] = []
    for index, var in enumerate(env):
        var_path = f"{path}[{index}]"
        name = _str(var.get("name"))
        if not name:
            causes.append(required(f"{var_path}.name", ""))
        elif "=" in name or not all(" " <= ch <= "~" for ch in name):
            causes.append(invalid(f"{var_path}.name", name,
                                  "a valid environment variable name must consist only of "
                                  "printable ASCII characters other than '='"))
        value_from = var.get("valueFrom")
        if isinstance(value_from, dict):
            from_path = f"{var_path}.valueFrom"
            sources = [key for key in ("fieldRef", "resourceFieldRef", "configMapKeyRef",
                                       "secretKeyRef") if value_from.get(key) is not None]
            if var.get("value"):
                causes.append(invalid(from_path, "",
                                      "may not be specified when `value` is not empty"))
            if not sources:
                causes.append(invalid(from_path, "",
                                      "must specify one of: `fieldRef`, `resourceFieldRef`, "
                                      "`configMapKeyRef` or `secretKeyRef`"))
            elif len(sources) > 1:
                causes.append(invalid(from_path, "",
                                      "may not have more than one field specified at a time"))
            for ref in ("configMapKeyRef", "secretKeyRef"):
                body = value_from.get(ref)
                if isinstance(body, dict) and not body.get("key"):
                    causes.append(required(f"{from_path}.{ref}.key", ""))
            field_ref = value_from.get("fieldRef")
            if isinstance(field_ref, dict) and not field_ref.get("fieldPath"):
                causes.append(required(f"{from_path}.fieldRef.fieldPath", ""))
    return causes


def _validate_volume_mounts(mounts: list[Obj], path: str, volumes: set[str]) -> list[Cause]:
    causes: list[Cause] = []
    mount_points: set[str] = set()
    for index, mount in enumerate(mounts):
        mount_path = f"{path}[{index}]"
        name = _str(mount.get("name"))
        if not name:
            causes.append(required(f"{mount_path}.name", ""))
        elif name not in volumes:
            causes.append(not_found_cause(f"{mount_path}.name", name))
        point = _str(mount.get("mountPath"))
        if not point:
            causes.append(required(f"{mount_path}.mountPath", ""))
        elif point in mount_points:
            causes.append(invalid(f"{mount_path}.mountPath", point, "must be unique"))
        mount_points.add(point)
        sub_path = _str(mount.get("subPath"))
        if sub_path.startswith("/"):
            causes.append(invalid(f"{mount_path}.subPath", sub_path, "must be a relative path"))
        elif ".." in sub_path.split("/"):
            causes.append(invalid(f"{mount_path}.subPath", sub_path, "must not contain '..'"))
    return causes


def _resource_quantities(values: Any, path: str) -> tuple[list[Cause], dict[str, Fraction]]:
    causes: list[Cause] = []
    parsed: dict[str, Fraction] = {}
    if not isinstance(values, dict):
        return causes, parsed
    for name, raw in values.items():
        entry_path = f"{path}[{name}]"
        name_errors = names.qualified_name(name)
        if name_errors:
            causes.extend(invalid(entry_path, name, msg) for msg in name_errors)
        elif "/" not in name and name not in STANDARD_CONTAINER_RESOURCES and \
                not name.startswith("hugepages-"):
            causes.append(invalid(entry_path, name,
                                  "must be a standard resource type or fully qualified"))
        try:
            amount = parse_quantity(raw)
        except ValueError as err:
            causes.append(invalid(entry_path, raw, str(err)))
            continue
        if amount < 0:
            causes.append(invalid(entry_path, format_quantity(raw), _NONNEGATIVE))
        elif "/" in name and not name.startswith("kubernetes.io/") and amount.denominator != 1:
            causes.append(invalid(entry_path, format_quantity(raw), "must be an integer"))
        parsed[name] = amount
    return causes, parsed


def _validate_resources(resources: Obj, path: str) -> list[Cause]:
    limit_causes, limits = _resource_quantities(resources.get("limits"), f"{path}.limits")
    request_causes, requests = _resource_quantities(resources.get("requests"),
                                                    f"{path}.requests")
    causes = limit_causes + request_causes
    raw_limits = resources.get("limits") or {}
    raw_requests = resources.get("requests") or {}
    for name, amount in requests.items():
        if name in limits and amount > limits[name]:
            causes.append(invalid(f"{path}.requests[{name}]", format_quantity(raw_requests[name]),
                                  f"must be less than or equal to {name} limit of "
                                  f"{format_quantity(raw_limits[name])}"))
    return causes


def _validate_container(container: Obj, path: str, volumes: set[str], host_network: bool,
                        plain_init: bool) -> list[Cause]:
    causes: list[Cause] = []
    image = container.get("image")
    if not isinstance(image, str) or not image:
        causes.append(required(f"{path}.image", ""))
    elif image.strip() != image:
        causes.append(invalid(f"{path}.image", image,
                              "must not have leading or trailing whitespace"))
    lifecycle = container.get("lifecycle")
    if isinstance(lifecycle, dict):
        if plain_init:
            causes.append(forbidden(f"{path}.lifecycle",
                                    "may not be set for init containers without "
                                    "restartPolicy=Always"))
        else:
            for hook in ("postStart", "preStop"):
                if isinstance(lifecycle.get(hook), dict):
                    causes.extend(_validate_handler(lifecycle[hook], f"{path}.lifecycle.{hook}"))
    for probe_name in _PROBES:
        probe = container.get(probe_name)
        if not isinstance(probe, dict):
            continue
        if plain_init:
            causes.append(forbidden(f"{path}.{probe_name}",
                                    "may not be set for init containers without "
                                    "restartPolicy=Always"))
            continue
        causes.extend(_validate_probe(probe, f"{path}.{probe_name}",
                                      must_succeed_once=probe_name != "readinessProbe"))
    causes.extend(_validate_ports(_dicts(container.get("ports")), f"{path}.ports",
                                  host_network))
    causes.extend(_validate_env(_dicts(container.get("env")), f"{path}.env"))
    causes.extend(_validate_volume_mounts(_dicts(container.get("volumeMounts")),
                                          f"{path}.volumeMounts", volumes))
    pull = container.get("imagePullPolicy", "")
    if not pull:
        causes.append(required(f"{path}.imagePullPolicy", ""))
    elif pull not in PULL_POLICIES:
        causes.append(not_supported(f"{path}.imagePullPolicy", pull, PULL_POLICIES))
    resources = container.get("resources")
    if isinstance(resources, dict):
        causes.extend(_validate_resources(resources, f"{path}.resources"))
    policy = container.get("terminationMessagePolicy", "")
    if not policy:
        causes.append(required(f"{path}.terminationMessagePolicy", ""))
    elif policy not in TERMINATION_MESSAGE_POLICIES:
        causes.append(not_supported(f"{path}.terminationMessagePolicy", policy,
                                    TERMINATION_MESSAGE_POLICIES))
    return causes


def _validate_containers(spec: Obj, path: str, volumes: set[str]) -> list[Cause]:
    causes: list[Cause] = []
    host_network = bool(spec.get("hostNetwork"))
    containers = _dicts(spec.get("containers"))
    if not containers:
        causes.append(required(f"{path}.containers", ""))
    seen: set[str] = set()
    groups = (("containers", containers), ("initContainers", _dicts(spec.get("initContainers"))))
    for group, members in groups:
        for index, container in enumerate(members):
            container_path = f"{path}.{group}[{index}]"
            name = _str(container.get("name"))
            if not name:
                causes.append(required(f"{container_path}.name", ""))
            else:
                causes.extend(invalid(f"{container_path}.name", name, msg)
                              for msg in names.dns1123_label(name))
            if name and name in seen:
                causes.append(duplicate(f"{container_path}.name", name))
            seen.add(name)
            plain_init = group == "initContainers" and container.get("restartPolicy") != "Always"
            if group == "initContainers" and "restartPolicy" in container and \
                    container["restartPolicy"] != "Always":
                causes.append(not_supported(f"{container_path}.restartPolicy",
                                            container["restartPolicy"], ["Always"]))
            elif group == "containers" and "restartPolicy" in container:
                causes.append(forbidden(f"{container_path}.restartPolicy",
                                        "may not be set for non-init containers"))
            causes.extend(_validate_container(container, container_path, volumes, host_network,
                                              plain_init))
    causes.extend(_host_port_conflicts(containers, path))
    return causes


def _host_port_conflicts(containers: list[Obj], path: str) -> list[Cause]:
    """Two containers of a pod may not claim the same hostIP/protocol/hostPort."""
    causes: list[Cause] = []
    claimed: set[str] = set()
    for index, container in enumerate(containers):
        for port_index, port in enumerate(_dicts(container.get("ports"))):
            host_port = port.get("hostPort", 0)
            if not host_port:
                continue
            key = f"{port.get('hostIP', '')}/{port.get('protocol', 'TCP')}/{host_port}"
            if key in claimed:
                causes.append(duplicate(
                    f"{path}.containers[{index}].ports[{port_index}].hostPort", key))
            claimed.add(key)
    return causes


def _validate_tolerations(tolerations: list[Obj], path: str) -> list[Cause]:
    causes: list[Cause] = []
    for index, toleration in enumerate(tolerations):
        tol_path = f"{path}[{index}]"
        key = _str(toleration.get("key"))
        operator = toleration.get("operator", "Equal") or "Equal"
        if key:
            causes.extend(invalid(f"{tol_path}.key", key, msg)
                          for msg in names.qualified_name(key))
        elif operator != "Exists":
            causes.append(invalid(f"{tol_path}.operator", operator,
                                  "operator must be Exists when `key` is empty, which means "
                                  "\"match all values and all keys\""))
        effect = toleration.get("effect", "")
        if toleration.get("tolerationSeconds") is not None and effect != "NoExecute":
            causes.append(invalid(f"{tol_path}.effect", effect,
                                  "effect must be 'NoExecute' when `tolerationSeconds` is set"))
        value = _str(toleration.get("value"))
        if operator == "Equal":
            causes.extend(invalid(f"{tol_path}.operator", value, msg)
                          for msg in names.label_value(value))
        elif operator == "Exists":
            if value:
                causes.append(invalid_shown(f"{tol_path}.operator", show_any(toleration),
                                            "value must be empty when `operator` is 'Exists'"))
        else:
            causes.append(not_supported(f"{tol_path}.operator", operator, TOLERATION_OPERATORS))
        if effect and effect not in TAINT_EFFECTS:
            causes.append(not_supported(f"{tol_path}.effect", effect, TAINT_EFFECTS))
    return causes


def validate_pod_spec(spec: Obj, path: str) -> list[Cause]:
    """Upstream's ValidatePodSpec for a defaulted spec at `path` (e.g. `spec.template.spec`)."""
    volume_causes, volume_names = _validate_volumes(_dicts(spec.get("volumes")),
                                                    f"{path}.volumes")
    causes = volume_causes + _validate_containers(spec, path, volume_names)
    restart = spec.get("restartPolicy", "")
    if not restart:
        causes.append(required(f"{path}.restartPolicy", ""))
    elif restart not in RESTART_POLICIES:
        causes.append(not_supported(f"{path}.restartPolicy", restart, RESTART_POLICIES))
    dns = spec.get("dnsPolicy", "")
    if not dns:
        causes.append(required(f"{path}.dnsPolicy", ""))
    elif dns not in DNS_POLICIES:
        causes.append(not_supported(f"{path}.dnsPolicy", dns, DNS_POLICIES))
    if dns == "None" and not spec.get("dnsConfig"):
        causes.append(required(f"{path}.dnsConfig", "must provide `dnsConfig` when `dnsPolicy` "
                                                    "is None"))
    causes.extend(meta.validate_labels(spec.get("nodeSelector"), f"{path}.nodeSelector"))
    account = _str(spec.get("serviceAccountName"))
    if account:
        causes.extend(invalid(f"{path}.serviceAccountName", account, msg)
                      for msg in names.dns1123_subdomain(account))
    node_name = _str(spec.get("nodeName"))
    if node_name:
        causes.extend(invalid(f"{path}.nodeName", node_name, msg)
                      for msg in names.dns1123_subdomain(node_name))
    deadline = spec.get("activeDeadlineSeconds")
    if isinstance(deadline, int) and not 1 <= deadline <= MAX_INT32:
        causes.append(invalid(f"{path}.activeDeadlineSeconds", deadline,
                              names.inclusive_range_error(1, MAX_INT32)))
    for key in ("hostname", "subdomain"):
        value = _str(spec.get(key))
        if value:
            causes.extend(invalid(f"{path}.{key}", value, msg)
                          for msg in names.dns1123_label(value))
    causes.extend(_validate_tolerations(_dicts(spec.get("tolerations")), f"{path}.tolerations"))
    grace = spec.get("terminationGracePeriodSeconds")
    if isinstance(grace, int) and grace < 0:
        causes.append(invalid(f"{path}.terminationGracePeriodSeconds", grace, _NONNEGATIVE))
    return causes


def selector_matches(selector: Obj | None, labels: dict[str, str]) -> bool | None:
    """Whether `selector` selects `labels`; None when the selector cannot be parsed."""
    try:
        return bool(label_selector_from_dict(selector).matches(labels))
    except Exception:
        return None


def is_empty_selector(selector: Obj | None) -> bool:
    return not selector or not (selector.get("matchLabels") or selector.get("matchExpressions"))


def validate_pod_template(template: Any, path: str, selector: Obj | None = None) -> list[Cause]:
    """Upstream's ValidatePodTemplateSpec, plus the selector-vs-labels check when given one."""
    if not isinstance(template, dict):
        return [required(path, "")]
    metadata = template.get("metadata") or {}
    labels = metadata.get("labels") or {}
    causes: list[Cause] = []
    if selector is not None and not is_empty_selector(selector) and \
            selector_matches(selector, labels) is False:
        shown = go_string_map(metadata.get("labels") if "labels" in metadata else None)
        causes.append(invalid_shown(f"{path}.metadata.labels", shown,
                                    "`selector` does not match template `labels`"))
    causes.extend(meta.validate_labels(labels, f"{path}.labels"))
    spec = template.get("spec")
    if not isinstance(spec, dict):
        causes.append(required(f"{path}.spec.containers", ""))
        return causes
    causes.extend(validate_pod_spec(spec, f"{path}.spec"))
    return causes


# --- QoS ----------------------------------------------------------------------------------------


def qos_class(spec: Obj) -> str:
    """Upstream's GetPodQOS over cpu and memory of every (init) container."""
    requests: dict[str, Fraction] = {}
    limits: dict[str, Fraction] = {}
    guaranteed = True
    for container in _dicts(spec.get("initContainers")) + _dicts(spec.get("containers")):
        resources = container.get("resources") or {}
        for name, raw in (resources.get("requests") or {}).items():
            amount = _safe_quantity(raw)
            if name in ("cpu", "memory") and amount > 0:
                requests[name] = requests.get(name, Fraction(0)) + amount
        found: set[str] = set()
        for name, raw in (resources.get("limits") or {}).items():
            amount = _safe_quantity(raw)
            if name in ("cpu", "memory") and amount > 0:
                found.add(name)
                limits[name] = limits.get(name, Fraction(0)) + amount
        if found != {"cpu", "memory"}:
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and all(limits.get(name) == amount for name, amount in requests.items()) \
            and len(requests) == len(limits):
        return "Guaranteed"
    return "Burstable"


def _safe_quantity(raw: Any) -> Fraction:
    try:
        return parse_quantity(raw)
    except ValueError:
        return Fraction(0)
