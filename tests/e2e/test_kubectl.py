"""The real kubectl against a real `kubi server`: the commands step 1 promises."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import yaml

from tests.cluster import Cluster

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
  labels:
    app: echo
spec:
  replicas: 3
  selector:
    matchLabels:
      app: echo
  template:
    metadata:
      labels:
        app: echo
    spec:
      containers:
      - name: nginx
        image: gihyodocker/nginx:latest
        env:
        - name: BACKEND_HOST
          value: localhost:8080
        - name: EXTRA
          value: "1"
        ports:
        - containerPort: 80
      - name: echo
        image: gihyodocker/echo:latest
        ports:
        - containerPort: 8080
"""


def test_version_and_namespaces(cluster: Cluster) -> None:
    out = cluster.kubectl("get", "namespace").stdout
    for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
        assert ns in out
    assert out.splitlines()[0].split() == ["NAME", "STATUS", "AGE"]
    version = cluster.kubectl("version", "-o", "json").stdout
    assert json.loads(version)["serverVersion"]["minor"] == "32"


def test_apply_create_reapply_and_remove_field(cluster: Cluster, namespace: str,
                                               tmp_path: Path) -> None:
    manifest = tmp_path / "deploy.yaml"
    manifest.write_text(DEPLOYMENT)
    out = cluster.kubectl("apply", "-n", namespace, "-f", str(manifest)).stdout
    assert "deployment.apps/echo created" in out
    first = json.loads(cluster.kubectl("get", "deploy", "echo", "-n", namespace, "-o",
                                       "json").stdout)
    assert first["metadata"]["generation"] == 1
    assert first["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == "25%"
    assert "kubectl.kubernetes.io/last-applied-configuration" in first["metadata"]["annotations"]

    changed = DEPLOYMENT.replace("replicas: 3", "replicas: 4").replace(
        "echo:latest", "echo:patched")
    manifest.write_text(changed)
    out = cluster.kubectl("apply", "-n", namespace, "-f", str(manifest)).stdout
    assert "deployment.apps/echo configured" in out
    second = json.loads(cluster.kubectl("get", "deploy", "echo", "-n", namespace, "-o",
                                        "json").stdout)
    assert second["spec"]["replicas"] == 4
    containers = {c["name"]: c for c in second["spec"]["template"]["spec"]["containers"]}
    assert containers["echo"]["image"] == "gihyodocker/echo:patched"
    assert second["metadata"]["generation"] == 2

    removed = changed.replace('        - name: EXTRA\n          value: "1"\n', "")
    manifest.write_text(removed)
    cluster.kubectl("apply", "-n", namespace, "-f", str(manifest))
    third = json.loads(cluster.kubectl("get", "deploy", "echo", "-n", namespace, "-o",
                                       "json").stdout)
    env = third["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "BACKEND_HOST", "value": "localhost:8080"}]

    out = cluster.kubectl("apply", "-n", namespace, "-f", str(manifest)).stdout
    assert "deployment.apps/echo unchanged" in out

    out = cluster.kubectl("delete", "-n", namespace, "-f", str(manifest)).stdout
    assert 'deployment.apps "echo" deleted' in out
    gone = cluster.kubectl("get", "deploy", "echo", "-n", namespace, check=False)
    assert gone.returncode == 1
    assert 'deployments.apps "echo" not found' in gone.stderr


def test_get_output_formats(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "cm1", "-n", namespace, "--from-literal=a=1",
                    "--from-literal=b=2")
    cluster.kubectl("label", "configmap", "cm1", "-n", namespace, "tier=web")
    table = cluster.kubectl("get", "cm", "cm1", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "DATA", "AGE"]
    assert table[1].split()[:2] == ["cm1", "2"]
    wide = cluster.kubectl("get", "cm", "-n", namespace, "-o", "wide").stdout
    assert "cm1" in wide
    as_yaml = yaml.safe_load(cluster.kubectl("get", "cm", "cm1", "-n", namespace, "-o",
                                             "yaml").stdout)
    assert as_yaml["data"] == {"a": "1", "b": "2"}
    as_json = json.loads(cluster.kubectl("get", "cm", "-n", namespace, "-o", "json").stdout)
    # kube-root-ca.crt is published into every namespace, as upstream.
    assert sorted(i["metadata"]["name"] for i in as_json["items"]) == ["cm1", "kube-root-ca.crt"]
    jsonpath = cluster.kubectl("get", "cm", "cm1", "-n", namespace, "-o",
                               "jsonpath={.data.b}").stdout
    assert jsonpath == "2"
    custom = cluster.kubectl("get", "cm", "-n", namespace, "-o",
                             "custom-columns=N:.metadata.name,A:.data.a").stdout.splitlines()
    assert custom[1].split() == ["cm1", "1"]
    labelled = cluster.kubectl("get", "cm", "-n", namespace, "-l", "tier=web").stdout
    assert "cm1" in labelled
    selector = cluster.kubectl("get", "cm", "-n", namespace, "--selector", "tier=db").stdout
    assert "cm1" not in selector
    show = cluster.kubectl("get", "cm", "cm1", "-n", namespace, "--show-labels").stdout
    assert "tier=web" in show
    every = cluster.kubectl("get", "cm", "-A").stdout
    assert namespace in every and "NAMESPACE" in every.splitlines()[0]


def test_create_generators_send_protobuf(cluster: Cluster, namespace: str) -> None:
    ns = ["-n", namespace]
    cluster.kubectl("create", "configmap", "c", "--from-literal=k=v", *ns)
    cluster.kubectl("create", "secret", "generic", "s", "--from-literal=password=s3cr3t", *ns)
    cluster.kubectl("create", "serviceaccount", "sa1", *ns)
    cluster.kubectl("create", "deployment", "d1", "--image=nginx", *ns)
    cluster.kubectl("create", "service", "clusterip", "svc1", "--tcp=80:8080", *ns)
    cluster.kubectl("create", "job", "j1", "--image=busybox", *ns, "--", "echo", "hi")
    cluster.kubectl("create", "cronjob", "cj1", "--image=busybox", "--schedule=*/5 * * * *",
                    *ns)
    cluster.kubectl("create", "role", "r1", "--verb=get", "--resource=pods", *ns)
    cluster.kubectl("create", "rolebinding", "rb1", "--role=r1", "--user=alice", *ns)
    secret = json.loads(cluster.kubectl("get", "secret", "s", "-o", "json", *ns).stdout)
    assert secret["data"]["password"] == "czNjcjN0"
    assert secret["type"] == "Opaque"
    svc = json.loads(cluster.kubectl("get", "svc", "svc1", "-o", "json", *ns).stdout)
    assert svc["spec"]["clusterIP"].startswith("10.43.")
    assert svc["spec"]["ports"][0]["targetPort"] == 8080
    job = json.loads(cluster.kubectl("get", "job", "j1", "-o", "json", *ns).stdout)
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["echo", "hi"]
    assert job["spec"]["backoffLimit"] == 6
    rb = json.loads(cluster.kubectl("get", "rolebinding", "rb1", "-o", "json", *ns).stdout)
    assert rb["subjects"][0]["name"] == "alice"
    out = cluster.kubectl("get", "deploy,svc,job,cronjob,role,rolebinding,sa,cm,secret",
                          *ns).stdout
    for name in ("deployment.apps/d1", "service/svc1", "job.batch/j1", "cronjob.batch/cj1",
                 "role.rbac.authorization.k8s.io/r1", "serviceaccount/sa1", "configmap/c",
                 "secret/s"):
        assert name in out


def test_label_annotate_scale_patch(cluster: Cluster, namespace: str) -> None:
    ns = ["-n", namespace]
    cluster.kubectl("create", "deployment", "web", "--image=nginx", *ns)
    cluster.kubectl("label", "deploy", "web", "tier=front", *ns)
    cluster.kubectl("annotate", "deploy", "web", "note=hello", *ns)
    cluster.kubectl("scale", "deploy", "web", "--replicas=4", *ns)
    obj = json.loads(cluster.kubectl("get", "deploy", "web", "-o", "json", *ns).stdout)
    assert obj["metadata"]["labels"]["tier"] == "front"
    assert obj["metadata"]["annotations"]["note"] == "hello"
    assert obj["spec"]["replicas"] == 4
    cluster.kubectl("patch", "deploy", "web", "--type=merge", "-p",
                    '{"spec":{"replicas":5}}', *ns)
    cluster.kubectl("patch", "deploy", "web", "--type=json", "-p",
                    '[{"op":"replace","path":"/spec/replicas","value":6}]', *ns)
    cluster.kubectl("patch", "deploy", "web", "--type=strategic", "-p",
                    '{"spec":{"template":{"spec":{"containers":[{"name":"nginx",'
                    '"image":"nginx:1.27"}]}}}}', *ns)
    obj = json.loads(cluster.kubectl("get", "deploy", "web", "-o", "json", *ns).stdout)
    assert obj["spec"]["replicas"] == 6
    assert obj["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
    assert obj["metadata"]["generation"] == 5
    cluster.kubectl("label", "deploy", "web", "tier-", *ns)
    obj = json.loads(cluster.kubectl("get", "deploy", "web", "-o", "json", *ns).stdout)
    assert "tier" not in obj["metadata"]["labels"]
    bad = cluster.kubectl("patch", "deploy", "web", "--type=json", "-p",
                          '[{"op":"test","path":"/spec/replicas","value":1}]', *ns, check=False)
    assert bad.returncode != 0


def test_describe_explain_api_resources(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "deployment", "d", "--image=nginx", "-n", namespace)
    described = cluster.kubectl("describe", "deploy", "d", "-n", namespace).stdout
    assert "Name:" in described and "nginx" in described
    explained = cluster.kubectl("explain", "deployment.spec").stdout
    assert "replicas" in explained and "DeploymentSpec" in explained
    resources = cluster.kubectl("api-resources").stdout
    for line in ("pods", "deployments", "cronjobs", "ingresses", "storageclasses"):
        assert line in resources
    assert "deploy" in resources and "sts" in resources
    versions = cluster.kubectl("api-versions").stdout.split()
    for gv in ("v1", "apps/v1", "batch/v1", "networking.k8s.io/v1",
               "rbac.authorization.k8s.io/v1", "storage.k8s.io/v1"):
        assert gv in versions


def test_delete_pod_by_name(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("run", "p1", "--image=nginx", "-n", namespace)
    listed = cluster.kubectl("get", "pods", "-n", namespace).stdout.splitlines()
    assert listed[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert listed[1].split()[:3] == ["p1", "0/1", "Pending"]
    out = cluster.kubectl("delete", "pod", "p1", "-n", namespace).stdout
    assert 'pod "p1" deleted' in out
    assert "No resources found" in cluster.kubectl("get", "pods", "-n", namespace).stderr


def test_get_watch_sees_create_update_delete(cluster: Cluster, namespace: str) -> None:
    watcher = subprocess.Popen(["kubectl", "get", "cm", "-n", namespace, "-w"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=cluster.env())
    try:
        time.sleep(1.5)  # let the watch start; the assertions below do not depend on timing
        cluster.kubectl("create", "configmap", "watched", "--from-literal=a=1", "-n", namespace)
        cluster.kubectl("label", "cm", "watched", "x=y", "-n", namespace)
        cluster.kubectl("delete", "cm", "watched", "-n", namespace)
        lines: list[str] = []
        deadline = time.monotonic() + 30
        assert watcher.stdout is not None
        while time.monotonic() < deadline and len(
                [line for line in lines if line.startswith("watched")]) < 3:
            line = watcher.stdout.readline()
            if not line:
                break
            lines.append(line)
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
    rows = [line.split() for line in lines if line.startswith("watched")]
    assert len(rows) >= 3, lines
    assert rows[0][1] == "1"


def test_seed_manifests_apply_and_delete(cluster: Cluster, namespace: str,
                                         seed_dir: Path) -> None:
    manifests = sorted((seed_dir / "manifests").glob("*.yml"))
    assert manifests
    for manifest in manifests:
        if "v1beta1" in manifest.name:
            continue  # removed upstream in 1.22; accepted-with-warning comes later
        out = cluster.kubectl("apply", "-n", namespace, "-f", str(manifest))
        assert "created" in out.stdout or "configured" in out.stdout, manifest
        cluster.kubectl("get", "-n", namespace, "-f", str(manifest))
        cluster.kubectl("delete", "-n", namespace, "-f", str(manifest))
