"""Shared pod spec rules: quantities, defaults, and each validation cause's path and wording."""

from __future__ import annotations

import copy
from fractions import Fraction
from typing import Any

import pytest

from kubi.api.errors import cause_text
from kubi.apiserver.registry import podspec

Obj = dict[str, Any]


def valid_spec() -> Obj:
    spec: Obj = {"containers": [{"name": "web", "image": "nginx:1.27",
                                 "ports": [{"containerPort": 80, "name": "http"}]}]}
    podspec.default_pod_spec(spec)
    return spec


def texts(spec: Obj, path: str = "spec") -> list[str]:
    return [cause_text(c) for c in podspec.validate_pod_spec(spec, path)]


@pytest.mark.parametrize(("text", "value"), [
    ("100m", Fraction(1, 10)), ("1Gi", Fraction(1024**3)), ("1e3", Fraction(1000)),
    ("0.5", Fraction(1, 2)), ("128Mi", Fraction(128 * 1024**2)), ("2k", Fraction(2000)),
    (3, Fraction(3)), ("+1", Fraction(1)), ("-2m", Fraction(-2, 1000)),
])
def test_parse_quantity(text: Any, value: Fraction) -> None:
    assert podspec.parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "1Gx", ".", "1 Gi", True])
def test_parse_quantity_rejects(text: Any) -> None:
    with pytest.raises(ValueError, match="quantities must match the regular expression"):
        podspec.parse_quantity(text)


@pytest.mark.parametrize(("text", "canonical"), [
    ("0.5", "500m"), ("1000m", "1"), ("1Gi", "1Gi"), ("1536Mi", "1536Mi"), ("2000", "2k"),
    ("100m", "100m"),
])
def test_format_quantity(text: str, canonical: str) -> None:
    assert podspec.format_quantity(text) == canonical


@pytest.mark.parametrize(("image", "policy"), [
    ("nginx", "Always"), ("nginx:latest", "Always"), ("nginx:1.27", "IfNotPresent"),
    ("localhost:5000/app", "Always"), ("localhost:5000/app:v1", "IfNotPresent"),
    ("nginx@sha256:" + "a" * 64, "IfNotPresent"),
])
def test_default_pull_policy(image: str, policy: str) -> None:
    assert podspec.default_pull_policy(image) == policy


def test_defaults_of_probes_env_and_volumes() -> None:
    spec: Obj = {
        "containers": [{
            "name": "c", "image": "x:1",
            "livenessProbe": {"httpGet": {"port": 80}},
            "readinessProbe": {"grpc": {"port": 9000}},
            "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        }],
        "volumes": [{"name": "cm", "configMap": {"name": "conf"}},
                    {"name": "sec", "secret": {"secretName": "s"}},
                    {"name": "scratch"},
                    {"name": "host", "hostPath": {"path": "/tmp"}}],
    }
    podspec.default_pod_spec(spec)
    container = spec["containers"][0]
    assert container["livenessProbe"] == {
        "httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
        "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}
    assert container["readinessProbe"]["grpc"] == {"port": 9000, "service": ""}
    assert container["env"][0]["valueFrom"]["fieldRef"] == {"fieldPath": "spec.nodeName",
                                                             "apiVersion": "v1"}
    assert spec["volumes"] == [
        {"name": "cm", "configMap": {"name": "conf", "defaultMode": 420}},
        {"name": "sec", "secret": {"secretName": "s", "defaultMode": 420}},
        {"name": "scratch", "emptyDir": {}},
        {"name": "host", "hostPath": {"path": "/tmp", "type": ""}},
    ]


def test_defaults_keep_given_values_and_mirror_service_account() -> None:
    spec: Obj = {"containers": [{"name": "c", "image": "x", "imagePullPolicy": "Never"}],
                 "restartPolicy": "Never", "serviceAccountName": "robot"}
    podspec.default_pod_spec(spec)
    assert spec["restartPolicy"] == "Never"
    assert spec["containers"][0]["imagePullPolicy"] == "Never"
    assert spec["serviceAccount"] == "robot"


def test_valid_spec_has_no_causes() -> None:
    assert texts(valid_spec()) == []


def mutate(path: str, value: Any) -> Obj:
    """A valid spec with one field (dotted, list indexes as numbers) set to `value`."""
    spec = valid_spec()
    target: Any = spec
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target.setdefault(key, {})
    target[keys[-1]] = value
    return spec


@pytest.mark.parametrize(("path", "value", "expected"), [
    ("containers.0.name", "", "spec.containers[0].name: Required value"),
    ("containers.0.name", "Web_1", 'spec.containers[0].name: Invalid value: "Web_1": a lowercase '
     "RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
     "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
     "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
    ("containers.0.image", "", "spec.containers[0].image: Required value"),
    ("containers.0.image", " nginx", 'spec.containers[0].image: Invalid value: " nginx": must '
     "not have leading or trailing whitespace"),
    ("containers.0.ports.0.containerPort", 70000, "spec.containers[0].ports[0].containerPort: "
     "Invalid value: 70000: must be between 1 and 65535, inclusive"),
    ("containers.0.ports.0.containerPort", 0,
     "spec.containers[0].ports[0].containerPort: Required value"),
    ("containers.0.ports.0.hostPort", 65536, "spec.containers[0].ports[0].hostPort: "
     "Invalid value: 65536: must be between 1 and 65535, inclusive"),
    ("containers.0.ports.0.protocol", "HTTP", 'spec.containers[0].ports[0].protocol: '
     'Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP"'),
    ("containers.0.ports.0.name", "a-very-long-port-name", "spec.containers[0].ports[0].name: "
     'Invalid value: "a-very-long-port-name": must be no more than 15 characters'),
    ("containers.0.imagePullPolicy", "Sometimes", "spec.containers[0].imagePullPolicy: "
     'Unsupported value: "Sometimes": supported values: "Always", "IfNotPresent", "Never"'),
    ("containers.0.terminationMessagePolicy", "Log",
     'spec.containers[0].terminationMessagePolicy: Unsupported value: "Log": supported values: '
     '"File", "FallbackToLogsOnError"'),
    ("restartPolicy", "Sometimes", 'spec.restartPolicy: Unsupported value: "Sometimes": '
     'supported values: "Always", "OnFailure", "Never"'),
    ("restartPolicy", "", "spec.restartPolicy: Required value"),
    ("dnsPolicy", "Google", 'spec.dnsPolicy: Unsupported value: "Google": supported values: '
     '"ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"'),
    ("activeDeadlineSeconds", 0, "spec.activeDeadlineSeconds: Invalid value: 0: must be "
     "between 1 and 2147483647, inclusive"),
    ("containers.0.resources", {"requests": {"cpu": "2"}, "limits": {"cpu": "500m"}},
     'spec.containers[0].resources.requests[cpu]: Invalid value: "2": must be less than or '
     "equal to cpu limit of 500m"),
    ("containers.0.resources", {"limits": {"memory": "lots"}},
     'spec.containers[0].resources.limits[memory]: Invalid value: "lots": quantities must match '
     "the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"),
    ("containers.0.resources", {"requests": {"cpu": "-1"}},
     'spec.containers[0].resources.requests[cpu]: Invalid value: "-1": must be greater than or '
     "equal to 0"),
    ("containers.0.resources", {"requests": {"gpu": "1"}},
     'spec.containers[0].resources.requests[gpu]: Invalid value: "gpu": must be a standard '
     "resource type or fully qualified"),
    ("containers.0.env", [{"name": "A=B", "value": "x"}], 'spec.containers[0].env[0].name: '
     'Invalid value: "A=B": a valid environment variable name must consist only of printable '
     "ASCII characters other than '='"),
    ("containers.0.env", [{"value": "x"}], "spec.containers[0].env[0].name: Required value"),
    ("containers.0.volumeMounts", [{"name": "data", "mountPath": "/data"}],
     'spec.containers[0].volumeMounts[0].name: Not found: "data"'),
    ("containers.0.livenessProbe", {"periodSeconds": 10},
     "spec.containers[0].livenessProbe: Required value: must specify a handler type"),
    ("containers.0.livenessProbe", {"tcpSocket": {"port": 80}, "successThreshold": 2},
     "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1"),
    ("containers.0.readinessProbe", {"exec": {"command": ["true"]}, "periodSeconds": -1},
     "spec.containers[0].readinessProbe.periodSeconds: Invalid value: -1: must be greater than "
     "or equal to 0"),
    ("volumes", [{"name": "v", "configMap": {"name": "c", "defaultMode": 1000}}],
     "spec.volumes[0].configMap.defaultMode: Invalid value: 1000: must be a number between 0 "
     "and 0777 (octal), both inclusive"),
    ("volumes", [{"name": "v", "emptyDir": {}, "hostPath": {"path": "/"}}],
     "spec.volumes[0].emptyDir: Forbidden: may not specify more than 1 volume type"),
    ("volumes", [{"name": "v", "secret": {}}], "spec.volumes[0].secret.secretName: Required value"),
    ("tolerations", [{"key": "k", "operator": "Exists", "value": "v"}],
     "spec.tolerations[0].operator: Invalid value: "),
    ("tolerations", [{"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule",
                      "tolerationSeconds": 5}],
     'spec.tolerations[0].effect: Invalid value: "NoSchedule": effect must be \'NoExecute\' '
     "when `tolerationSeconds` is set"),
])
def test_each_rule_reports_upstream_path_and_wording(path: str, value: Any,
                                                     expected: str) -> None:
    found = texts(mutate(path, value))
    assert any(text.startswith(expected) for text in found), found


def test_container_names_unique_across_init_and_regular_containers() -> None:
    spec = valid_spec()
    spec["initContainers"] = [{"name": "web", "image": "busybox"}]
    podspec.default_pod_spec(spec)
    assert texts(spec) == ['spec.initContainers[0].name: Duplicate value: "web"']


def test_duplicate_port_names_and_host_ports() -> None:
    spec = valid_spec()
    spec["containers"][0]["ports"] = [
        {"name": "http", "containerPort": 80, "hostPort": 8080, "protocol": "TCP"},
        {"name": "http", "containerPort": 81, "hostPort": 8080, "protocol": "TCP"},
    ]
    assert texts(spec) == [
        'spec.containers[0].ports[1].name: Duplicate value: "http"',
        'spec.containers[0].ports[1].hostPort: Duplicate value: "/TCP/8080"',
    ]


def test_missing_containers_and_template_path_prefix() -> None:
    spec = valid_spec()
    spec["containers"] = []
    assert texts(spec, "spec.template.spec") == ["spec.template.spec.containers: Required value"]


def test_plain_init_containers_may_not_have_probes() -> None:
    spec = valid_spec()
    spec["initContainers"] = [{"name": "init", "image": "busybox",
                               "readinessProbe": {"exec": {"command": ["true"]}}}]
    podspec.default_pod_spec(spec)
    assert texts(spec) == ["spec.initContainers[0].readinessProbe: Forbidden: may not be set "
                           "for init containers without restartPolicy=Always"]
    spec["initContainers"][0]["restartPolicy"] = "Always"
    assert texts(spec) == []


def test_template_selector_mismatch_uses_go_map_rendering() -> None:
    template = {"metadata": {"labels": {"app": "web", "tier": "fe"}}, "spec": valid_spec()}
    causes = podspec.validate_pod_template(template, "spec.template",
                                           {"matchLabels": {"app": "api"}})
    assert [cause_text(c) for c in causes] == [
        'spec.template.metadata.labels: Invalid value: map[string]string{"app":"web", '
        '"tier":"fe"}: `selector` does not match template `labels`']
    matching = podspec.validate_pod_template(template, "spec.template",
                                             {"matchExpressions": [{"key": "tier",
                                                                    "operator": "In",
                                                                    "values": ["fe"]}]})
    assert matching == []


def test_validation_does_not_change_the_spec() -> None:
    spec = mutate("containers.0.ports.0.containerPort", 70000)
    before = copy.deepcopy(spec)
    podspec.validate_pod_spec(spec, "spec")
    assert spec == before


@pytest.mark.parametrize(("containers", "qos"), [
    ([{}], "BestEffort"),
    ([{"requests": {"cpu": "100m"}}], "Burstable"),
    ([{"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}],
     "Guaranteed"),
    ([{"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
      {}], "Burstable"),
    ([{"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}],
     "Burstable"),
])
def test_qos_class(containers: list[Obj], qos: str) -> None:
    spec = {"containers": [{"name": f"c{i}", "image": "x", "resources": r}
                           for i, r in enumerate(containers)]}
    assert podspec.qos_class(spec) == qos


def test_go_label_selector_rendering() -> None:
    assert podspec.go_label_selector({"matchLabels": {"app": "x"}}) == (
        'v1.LabelSelector{MatchLabels:map[string]string{"app":"x"}, '
        "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}")
    assert podspec.go_label_selector(
        {"matchExpressions": [{"key": "a", "operator": "In", "values": ["b"]}]}) == (
        "v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:"
        '[]v1.LabelSelectorRequirement{v1.LabelSelectorRequirement{Key:"a", Operator:"In", '
        'Values:[]string{"b"}}}}')
