"""Protobuf request bodies, checked against what the real kubectl sends.

Each kubectl test runs a `create <generator>` against a throwaway HTTP server that
records the protobuf body, then compares our decoding with the JSON kubectl prints for
the same command under `--dry-run=client -o json` (the same Go object, JSON-encoded).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kubi.api import protobuf_types
from kubi.api.durations import go_duration
from kubi.api.errors import StatusError
from kubi.api.protobuf import MAGIC, decode_body, encode_object

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")

_CORE_RESOURCES = [
    {"name": name, "singularName": singular, "namespaced": namespaced, "kind": kind,
     "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
    for name, singular, namespaced, kind in [
        ("pods", "pod", True, "Pod"), ("namespaces", "namespace", False, "Namespace"),
        ("configmaps", "configmap", True, "ConfigMap"),
        ("serviceaccounts", "serviceaccount", True, "ServiceAccount"),
    ]
]


class _Recorder(BaseHTTPRequestHandler):
    """Minimal API server: discovery for the core group, POST decodes and echoes."""

    bodies: list[tuple[str, str, bytes]]

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def _answer(self, code: int, obj: dict[str, Any]) -> None:
        payload = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/version":
            self._answer(200, {"major": "1", "minor": "32", "gitVersion": "v1.32.0"})
        elif path == "/api":
            self._answer(200, {"kind": "APIVersions", "versions": ["v1"],
                               "serverAddressByClientCIDRs": []})
        elif path == "/apis":
            self._answer(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
        elif path == "/api/v1":
            self._answer(200, {"kind": "APIResourceList", "groupVersion": "v1",
                               "resources": _CORE_RESOURCES})
        else:
            self._answer(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "reason": "NotFound", "code": 404, "message": "not found"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.bodies.append((self.path, self.headers.get("Content-Type", ""), body))
        try:
            obj = decode_body(body)
        except StatusError as exc:
            self._answer(exc.code, exc.to_status())
            return
        if obj["kind"] == "TokenRequest":
            obj["status"] = {"token": "token-from-test", "expirationTimestamp":
                             "2030-01-01T00:00:00Z"}
        elif obj["kind"] == "SelfSubjectAccessReview":
            obj["status"] = {"allowed": True}
        self._answer(201, obj)


Env = tuple[list[str], dict[str, str], list[tuple[str, str, bytes]]]


@pytest.fixture(scope="module")
def _server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    bodies: list[tuple[str, str, bytes]] = []
    handler = type("Handler", (_Recorder,), {"bodies": bodies})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    root = tmp_path_factory.mktemp("kubectl")
    kubeconfig = root / "kubeconfig"
    kubeconfig.write_text("")
    (root / "home").mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root / "home"),
           "KUBECONFIG": str(kubeconfig)}
    base = [str(KUBECTL), "--server", f"http://127.0.0.1:{server.server_address[1]}",
            "--cache-dir", str(root / "cache")]
    try:
        yield base, env, bodies
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def kubectl_env(_server: Env) -> Env:
    """kubectl pointed at the recording server; `bodies` holds this test's POSTs."""
    _server[2].clear()
    return _server


def _run(cmd: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _write_key_pair(cert_path: Path, key_path: Path) -> None:
    """A throwaway self-signed certificate: `create secret tls` checks the PEM pair."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))


GENERATORS = [
    ["create", "namespace", "ns1"],
    ["create", "configmap", "cm1", "--from-literal=key=value", "--from-literal=k2=v2"],
    ["create", "secret", "generic", "s1", "--from-literal=password=s3cr3t",
     "--from-literal=empty="],
    ["create", "secret", "tls", "tls1", "--cert=CERT", "--key=KEY"],
    ["create", "serviceaccount", "sa1"],
    ["create", "deployment", "d1", "--image=nginx", "--replicas=0", "--port=8080"],
    ["create", "deployment", "d2", "--image=nginx", "--image=busybox", "--replicas=3"],
    ["create", "service", "clusterip", "svc1", "--tcp=80:8080", "--tcp=443:https"],
    ["create", "service", "nodeport", "svc2", "--tcp=80:8080", "--node-port=30080"],
    ["create", "service", "externalname", "svc3", "--external-name=example.com"],
    ["create", "job", "j1", "--image=busybox", "--", "echo", "hi"],
    ["create", "cronjob", "cj1", "--image=busybox", "--schedule=*/5 * * * *",
     "--restart=OnFailure", "--", "date"],
    ["create", "role", "r1", "--verb=get", "--verb=list", "--resource=pods",
     "--resource-name=p1"],
    ["create", "rolebinding", "rb1", "--role=r1", "--user=alice",
     "--serviceaccount=default:sa1"],
    ["create", "clusterrole", "cr1", "--verb=get", "--resource=pods",
     "--non-resource-url=/logs/*"],
    ["create", "clusterrole", "cr2", "--aggregation-rule=rbac.example.com/agg=true"],
    ["create", "clusterrolebinding", "crb1", "--clusterrole=cr1", "--user=alice",
     "--group=devs"],
    ["create", "ingress", "ing1", "--rule=foo.example.com/bar=svc1:80",
     "--rule=tls.example.com/*=svc2:http,tls=sec1", "--annotation=a=b"],
    ["create", "quota", "q1", "--hard=pods=3,cpu=1,memory=1Gi", "--scopes=BestEffort"],
    ["create", "priorityclass", "pc1", "--value=1000", "--description=test",
     "--preemption-policy=Never"],
    ["create", "priorityclass", "pc0", "--value=0", "--global-default"],
    ["create", "poddisruptionbudget", "pdb1", "--selector=app=x", "--min-available=1"],
    ["create", "poddisruptionbudget", "pdb2", "--selector=app=x", "--max-unavailable=50%"],
]


@needs_kubectl
@pytest.mark.parametrize("args", GENERATORS, ids=lambda a: "-".join(a[1:3]))
def test_generators_match_kubectl_json(
        args: list[str], tmp_path: Path,
        kubectl_env: Env) -> None:
    base, env, bodies = kubectl_env
    args = [a.replace("CERT", str(tmp_path / "tls.crt")).replace("KEY", str(tmp_path / "k"))
            for a in args]
    _write_key_pair(tmp_path / "tls.crt", tmp_path / "k")
    expected = json.loads(_run([*base, "--dry-run=client", "-o", "json", *args], env))
    # Go writes a nil slice without omitempty as null (ClusterRole.rules); empty repeated
    # fields are absent on the wire, and we leave them out.
    if expected.get("rules", []) is None:
        del expected["rules"]
    _run([*base, *args], env)
    assert len(bodies) == 1
    _path, content_type, body = bodies[0]
    assert content_type == "application/vnd.kubernetes.protobuf"
    assert decode_body(body) == expected
    # Our encoder writes what we decoded back to the same JSON.
    assert decode_body(encode_object(expected)) == expected


@needs_kubectl
def test_zero_replicas_survives(
        kubectl_env: Env) -> None:
    base, env, bodies = kubectl_env
    _run([*base, "create", "deployment", "d0", "--image=nginx", "--replicas=0"], env)
    obj = decode_body(bodies[0][2])
    assert obj["spec"]["replicas"] == 0
    assert "generateName" not in obj["metadata"]  # an empty non-pointer omitempty field
    assert obj["metadata"]["creationTimestamp"] is None


@needs_kubectl
def test_secret_data_is_base64(
        kubectl_env: Env) -> None:
    base, env, bodies = kubectl_env
    _run([*base, "create", "secret", "generic", "s1", "--from-literal=password=s3cr3t"], env)
    obj = decode_body(bodies[0][2])
    assert obj["data"] == {"password": base64.b64encode(b"s3cr3t").decode()}
    assert set(obj) == {"kind", "apiVersion", "metadata", "data"}


@needs_kubectl
def test_create_token_body(
        kubectl_env: Env) -> None:
    base, env, bodies = kubectl_env
    out = _run([*base, "create", "token", "default", "--duration=1h",
                "--audience=api", "--audience=vault"], env)
    assert out.strip() == "token-from-test"
    path, _, body = bodies[0]
    assert path == "/api/v1/namespaces/default/serviceaccounts/default/token"
    assert decode_body(body) == {
        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": None},
        "spec": {"audiences": ["api", "vault"], "expirationSeconds": 3600},
        "status": {"token": "", "expirationTimestamp": None},
    }


@needs_kubectl
def test_auth_can_i_body(
        kubectl_env: Env) -> None:
    base, env, bodies = kubectl_env
    assert _run([*base, "auth", "can-i", "get", "pods"], env).strip() == "yes"
    path, _, body = bodies[0]
    assert path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    assert decode_body(body) == {
        "kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": None},
        "spec": {"resourceAttributes": {"namespace": "default", "verb": "get",
                                        "resource": "pods"}},
        "status": {"allowed": False},
    }


# --- bodies recorded from kubectl 1.32 (docs/kubectl-requests.md §9, §10) ----------------

NAMESPACE_BODY = (b'k8s\x00\n\x0f\n\x02v1\x12\tNamespace\x12\x1b\n\x13\n\x03ns1\x12\x00\x1a\x00'
                  b'"\x00*\x002\x008\x00B\x00\x12\x00\x1a\x02\n\x00\x1a\x00"\x00')
WHOAMI_BODY = (b'k8s\x00\n-\n\x18authentication.k8s.io/v1\x12\x11SelfSubjectReview\x12\x1a'
               b'\n\x10\n\x00\x12\x00\x1a\x00"\x00*\x002\x008\x00B\x00\x12\x06\n\x04\n\x00'
               b'\x12\x00\x1a\x00"\x00')


def test_recorded_namespace() -> None:
    assert decode_body(NAMESPACE_BODY) == {
        "kind": "Namespace", "apiVersion": "v1",
        "metadata": {"name": "ns1", "creationTimestamp": None}, "spec": {}, "status": {}}


def test_recorded_self_subject_review() -> None:
    assert decode_body(WHOAMI_BODY) == {
        "kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": None}, "status": {"userInfo": {}}}


# --- the hand-written conversions -----------------------------------------------------

def _roundtrip(obj: dict[str, Any]) -> dict[str, Any]:
    return decode_body(encode_object(obj))


def test_pod_with_everything_round_trips() -> None:
    pod = {
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {
            "name": "p", "namespace": "ns", "uid": "u-1", "resourceVersion": "7",
            "generation": 3, "creationTimestamp": "2024-01-01T00:00:00Z",
            "deletionTimestamp": "2024-02-03T04:05:06Z", "deletionGracePeriodSeconds": 0,
            "labels": {"a": "1"}, "annotations": {"b": ""},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                                 "uid": "u-2", "controller": True}],
            "finalizers": ["f1"],
            "managedFields": [{"manager": "kubectl", "operation": "Update",
                               "apiVersion": "v1", "time": "2024-01-01T00:00:00Z",
                               "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:metadata": {"f:labels": {"f:a": {}}}}}],
        },
        "spec": {
            "volumes": [
                {"name": "cfg", "configMap": {"name": "cm", "defaultMode": 420,
                                              "items": [{"key": "k", "path": "p"}]}},
                {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}},
            ],
            "containers": [{
                "name": "c", "image": "nginx", "command": ["sh"], "args": ["-c", "x"],
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "env": [{"name": "A", "value": "1"},
                        {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}],
                "resources": {"limits": {"cpu": "500m"}, "requests": {"memory": "64Mi"}},
                "livenessProbe": {"httpGet": {"path": "/", "port": 8080, "scheme": "HTTP"},
                                  "initialDelaySeconds": 5, "periodSeconds": 10},
                "readinessProbe": {"tcpSocket": {"port": "http"},
                                   "terminationGracePeriodSeconds": 0},
                "securityContext": {"runAsUser": 0, "runAsNonRoot": False,
                                    "privileged": False,
                                    "capabilities": {"add": ["NET_ADMIN"]}},
                "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg", "readOnly": True}],
            }],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
            "nodeSelector": {"disk": "ssd"}, "hostIPC": True, "hostNetwork": True,
            "securityContext": {"fsGroup": 2000, "supplementalGroups": [1, 2]},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "k", "operator": "In", "values": ["a", "b"]}]}]}}},
            "tolerations": [{"key": "t", "operator": "Exists", "effect": "NoSchedule",
                             "tolerationSeconds": -5}],
            "overhead": {"cpu": "10m"},
        },
        "status": {"phase": "Running", "podIP": "10.0.0.1",
                   "podIPs": [{"ip": "10.0.0.1"}],
                   "startTime": "2024-01-01T00:00:01Z",
                   "conditions": [{"type": "Ready", "status": "True",
                                   "lastProbeTime": None,
                                   "lastTransitionTime": "2024-01-01T00:00:02Z"}]},
    }
    assert _roundtrip(pod) == pod


def test_special_types_round_trip() -> None:
    lease = {"kind": "Lease", "apiVersion": "coordination.k8s.io/v1",
             "metadata": {"name": "l"},
             "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15,
                      "acquireTime": "2024-05-06T07:08:09.123456Z",
                      "renewTime": "1969-12-31T23:59:59.000001Z", "leaseTransitions": 0}}
    assert _roundtrip(lease) == lease
    hpa = {"kind": "HorizontalPodAutoscaler", "apiVersion": "autoscaling/v2",
           "metadata": {"name": "h"},
           "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "d"}, "maxReplicas": 5,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                        "type": "Utilization", "averageUtilization": 80}}}]}}
    assert _roundtrip(hpa) == hpa
    review = {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
              "metadata": {}, "spec": {"token": "t"},
              "status": {"authenticated": True, "user": {
                  "username": "u", "extra": {"scopes": ["a", "b"]}}}}
    assert _roundtrip(review) == review
    revision = {"kind": "ControllerRevision", "apiVersion": "apps/v1",
                "metadata": {"name": "r"}, "data": {"spec": {"x": [1, "y"]}}, "revision": 2}
    assert _roundtrip(revision) == revision
    job = {"kind": "Job", "apiVersion": "batch/v1", "metadata": {"name": "j"},
           "spec": {"template": {"metadata": {}, "spec": {"containers": [{"name": ""}]}},
                    "podFailurePolicy": {"rules": [{"action": "Ignore", "onExitCodes": {
                        "operator": "In", "values": [1, 2]}}]}}}
    assert _roundtrip(job) == job


def test_durations_print_like_go() -> None:
    assert [go_duration(n) for n in (0, 1, 1500, 2_000_000, 1_500_000_000, 60 * 10**9,
                                     3_600 * 10**9, 3_723_500_000_000, -90 * 10**9)] == [
        "0s", "1ns", "1.5µs", "2ms", "1.5s", "1m0s", "1h0m0s", "1h2m3.5s", "-1m30s"]
    # No stable kind has a Duration field; decode the message itself through the table.
    from kubi.api.protobuf import _compile, _special
    message = _compile()["meta.v1.Duration"]
    wire = bytes([0x08]) + _varint(90 * 10**9)
    assert _special(wire, 0, len(wire), message) == "1m30s"


def _body(api_version: str, kind: str, raw: bytes) -> bytes:
    def field(n: int, payload: bytes) -> bytes:
        return bytes([n << 3 | 2, len(payload)]) + payload
    meta = field(1, api_version.encode()) + field(2, kind.encode())
    return MAGIC + field(1, meta) + field(2, raw)


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def test_wire_details() -> None:
    # PodSecurityContext: supplementalGroups (4) packed [1,2,3] then unpacked 4;
    # runAsUser (2) = -1 as a ten-byte varint.
    context = bytes([0x22, 3, 1, 2, 3, 0x20, 4, 0x10]) + _varint(-1)
    spec = bytes([0x72, len(context)]) + context        # PodSpec.securityContext (14)
    spec += bytes([0xF8, 0x7F, 0x05])                   # unknown field 2047: skipped
    spec += bytes([0x52, 2]) + b"n1" + bytes([0x52, 0])  # nodeName (10) "n1", then ""
    spec += bytes([0xC8, 0x01]) + _varint(-10)          # priority (25), int32
    pod = bytes([0x12, len(spec)]) + spec
    # metadata (1) twice: the second merges into the first, as Go's Unmarshal does.
    pod += bytes([0x0A, 3, 0x0A, 1]) + b"a" + bytes([0x0A, 3, 0x1A, 1]) + b"b"
    assert decode_body(_body("v1", "Pod", pod)) == {
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": "a", "namespace": "b"},
        "spec": {"securityContext": {"supplementalGroups": [1, 2, 3, 4], "runAsUser": -1},
                 "priority": -10}}


def test_negative_and_pointer_zero_values() -> None:
    pod = {"kind": "Pod", "apiVersion": "v1", "metadata": {},
           "spec": {"activeDeadlineSeconds": 0,
                    "securityContext": {"runAsUser": -1}, "priority": -10}}
    assert _roundtrip(pod) == pod


# --- bad input --------------------------------------------------------------------------

def _status(data: bytes) -> StatusError:
    with pytest.raises(StatusError) as info:
        decode_body(data)
    return info.value


def test_wrong_magic() -> None:
    err = _status(b'{"kind":"Namespace"}')
    assert err.code == 400 and err.reason == "BadRequest"
    assert "does not appear to be a protobuf message" in err.message


def test_truncated_varint() -> None:
    # ObjectMeta.generation (field 7) whose varint never ends.
    meta = bytes([0x38, 0x80, 0x80])
    err = _status(_body("v1", "Namespace", bytes([0x0A, len(meta)]) + meta))
    assert err.code == 400
    assert err.message == ('Namespace in version "v1" cannot be handled as a Namespace: '
                           "unexpected EOF")


def test_truncated_envelope_and_lengths() -> None:
    assert "unexpected EOF" in _status(NAMESPACE_BODY[:-10]).message
    # A length running past the end of the typed message.
    err = _status(_body("v1", "Namespace", bytes([0x0A, 0x20, 0x0A, 0x01])))
    assert "unexpected EOF" in err.message


def test_field_with_wrong_wire_type() -> None:
    # ObjectMeta.name (field 1) sent as a varint.
    meta = bytes([0x08, 0x05])
    err = _status(_body("v1", "Namespace", bytes([0x0A, len(meta)]) + meta))
    assert err.code == 400
    assert err.message.endswith("proto: wrong wireType = 0 for field Name")


def test_overlong_varint() -> None:
    meta = bytes([0x38]) + b"\xff" * 11
    err = _status(_body("v1", "Namespace", bytes([0x0A, len(meta)]) + meta))
    assert "proto: integer overflow" in err.message


def test_unknown_kind() -> None:
    err = _status(_body("example.com/v1", "Widget", b""))
    assert err.code == 400
    assert 'no kind "Widget" is registered for version "example.com/v1"' in err.message


def test_missing_kind() -> None:
    assert "Object 'Kind' is missing" in _status(_body("v1", "", b"")).message


def test_bad_quantity_and_intorstring() -> None:
    quantity = bytes([0x0A, 0x03]) + b"abc"
    entry = bytes([0x0A, 0x03]) + b"cpu" + bytes([0x12, len(quantity)]) + quantity
    spec = bytes([0x0A, len(entry)]) + entry               # ResourceQuotaSpec.hard
    err = _status(_body("v1", "ResourceQuota", bytes([0x12, len(spec)]) + spec))
    assert "quantities must match the regular expression" in err.message
    ios = bytes([0x08, 0x07])                               # IntOrString type 7
    spec = bytes([0x0A, len(ios)]) + ios                    # PDB minAvailable
    err = _status(_body("policy/v1", "PodDisruptionBudget", bytes([0x12, len(spec)]) + spec))
    assert "IntOrString" in err.message


# --- the tables ------------------------------------------------------------------------

def test_tables_cover_the_kinds_we_serve() -> None:
    wanted = [("v1", k) for k in ("Namespace", "ConfigMap", "Secret", "ServiceAccount",
                                  "Service", "ResourceQuota", "Pod", "Event", "Binding",
                                  "PodList", "DeleteOptions")]
    wanted += [("apps/v1", k) for k in ("Deployment", "ReplicaSet", "StatefulSet",
                                        "DaemonSet", "DeploymentList")]
    wanted += [("batch/v1", "Job"), ("batch/v1", "CronJob"),
               ("networking.k8s.io/v1", "Ingress"),
               ("scheduling.k8s.io/v1", "PriorityClass"),
               ("policy/v1", "PodDisruptionBudget"), ("policy/v1", "Eviction"),
               ("coordination.k8s.io/v1", "Lease"), ("autoscaling/v1", "Scale"),
               ("authentication.k8s.io/v1", "TokenRequest"),
               ("authentication.k8s.io/v1", "SelfSubjectReview"),
               ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
               ("events.k8s.io/v1", "Event"), ("storage.k8s.io/v1", "StorageClass"),
               ("discovery.k8s.io/v1", "EndpointSlice")]
    wanted += [("rbac.authorization.k8s.io/v1", k) for k in
               ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")]
    missing = [w for w in wanted if w not in protobuf_types.KINDS]
    assert missing == []
    for name in protobuf_types.KINDS.values():
        assert name in protobuf_types.MESSAGES
