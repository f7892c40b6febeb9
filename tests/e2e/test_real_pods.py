"""The book's pod walkthrough with real containers: `kubi server` with its node agent
(runc), images from a real local registry mirrored as docker.io, the real kubectl.

Pod networking lives in a network namespace this test makes, never the host's."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from kubi.kubelet.agent import AgentConfig
from tests.cluster import Cluster, start_cluster, wait_for
from tests.conftest_registry import LocalRegistry
from tests.kubelet.agent_env import AgentNode, cleanup_node, new_netns, require_tools

T = TypeVar("T")


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory, registry: LocalRegistry) -> Iterator[
        tuple[Cluster, str]]:
    require_tools("curl")
    netns = new_netns()
    data = tmp_path_factory.mktemp("kubi-real")
    cluster = start_cluster(data, "--registries", str(registry.registries_yaml),
                            "--node-name", "book-node", agent_netns=netns)
    try:
        yield cluster, netns
    finally:
        cluster.kubectl("delete", "pods", "--all", "--grace-period=0", "--force",
                        check=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "simple-echo" in cluster.kubectl(
                "get", "pods", check=False).stdout:
            time.sleep(0.5)
        cluster.stop()
        # Whatever is left (after a failure too): containers, mounts, cgroups, namespaces.
        cleanup_node(AgentNode(AgentConfig("book-node", data / "agent"), netns,
                               data / "agent", f"/{netns}"))



def pod(cluster: Cluster, name: str) -> dict:
    result = cluster.kubectl("get", "pod", name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def test_the_books_pod_walkthrough(real: tuple[Cluster, str], seed_dir: Path) -> None:
    cluster, netns = real
    wait_for(lambda: " Ready " in cluster.kubectl("get", "nodes").stdout)
    manifest = str(seed_dir / "manifests" / "simple-pod.yml")
    cluster.kubectl("apply", "-f", manifest)

    def running() -> bool:
        rows = cluster.kubectl("get", "pod").stdout.splitlines()
        return any(r.split()[:3] == ["simple-echo", "2/2", "Running"] for r in rows)

    wait_for(running, cluster=cluster)
    ip = pod(cluster, "simple-echo")["status"]["podIP"]
    # A request to nginx, which proxies to echo over localhost inside the pod.
    answer = subprocess.run(["ip", "netns", "exec", netns, "curl", "-s", f"http://{ip}/"],
                            capture_output=True, text=True, timeout=30).stdout
    assert "Hello Docker!!" in answer

    follower = subprocess.Popen(["kubectl", "logs", "-f", "simple-echo", "-c", "echo"],
                                stdout=subprocess.PIPE, text=True, env=cluster.env())
    try:
        assert follower.stdout is not None
        line = ""
        deadline = time.monotonic() + 60
        while "received request" not in line and time.monotonic() < deadline:
            line = follower.stdout.readline()
        assert "received request" in line
    finally:
        follower.terminate()
        follower.wait(timeout=10)

    # The book's form is refused by kubectl 1.32 itself, before any request is sent.
    verbatim = cluster.kubectl("exec", "-it", "simple-echo", "sh", "-c", "nginx", check=False)
    assert verbatim.returncode != 0
    assert "exec [POD] [COMMAND] is not supported anymore" in verbatim.stderr
    shell = cluster.kubectl("exec", "-i", "simple-echo", "-c", "nginx", "--", "sh",
                            input="echo hello-from-$(hostname)\nexit 0\n")
    assert "hello-from-simple-echo" in shell.stdout
    code = cluster.kubectl("exec", "simple-echo", "-c", "nginx", "--", "sh", "-c", "exit 3",
                           check=False)
    assert code.returncode == 3

    cluster.kubectl("delete", "pod", "simple-echo")
    assert pod(cluster, "simple-echo") == {}
    cluster.kubectl("apply", "-f", manifest)
    wait_for(running)
    cluster.kubectl("delete", "-f", manifest)
    assert pod(cluster, "simple-echo") == {}


def test_a_missing_image_backs_off(real: tuple[Cluster, str]) -> None:
    cluster, _ = real
    cluster.kubectl("run", "ghost", "--image=gihyodocker/does-not-exist:1.0")

    def reason() -> str:
        statuses = pod(cluster, "ghost").get("status", {}).get("containerStatuses") or []
        return ((statuses[0].get("state") or {}).get("waiting") or {}).get("reason", "") \
            if statuses else ""

    wait_for(lambda: reason() == "ImagePullBackOff")
    events = cluster.kubectl("get", "events", "--field-selector",
                             "involvedObject.name=ghost").stdout
    assert "gihyodocker/does-not-exist:1.0" in events
    cluster.kubectl("delete", "pod", "ghost", "--grace-period=0", "--force")


def test_deployment_image_change_replaces_real_pods(real: tuple[Cluster, str], seed_dir: Path,
                                                    tmp_path: Path) -> None:
    cluster, _ = real
    original = (seed_dir / "manifests" / "simple-deployment.yml").read_text()
    manifest = tmp_path / "simple-deployment.yml"
    manifest.write_text(original)
    cluster.kubectl("apply", "-f", str(manifest), "--record")
    cluster.kubectl("rollout", "status", "deployment", "echo", "--timeout=180s")
    manifest.write_text(original.replace("gihyodocker/echo:latest", "gihyodocker/echo:patched"))
    cluster.kubectl("apply", "-f", str(manifest), "--record")
    cluster.kubectl("rollout", "status", "deployment", "echo", "--timeout=180s")
    pods = json.loads(cluster.kubectl("get", "pod", "-l", "app=echo", "-o", "json").stdout)
    live = [p for p in pods["items"] if "deletionTimestamp" not in p["metadata"]]
    assert len(live) == 3
    for p in live:
        images = {c["image"] for c in p["status"]["containerStatuses"]}
        assert "gihyodocker/echo:patched" in images or "docker.io/gihyodocker/echo:patched" \
            in images
    history = cluster.kubectl("rollout", "history", "deployment", "echo").stdout
    assert [r.split()[0] for r in history.splitlines() if r[:1].isdigit()] == ["1", "2"]
    cluster.kubectl("delete", "-f", str(manifest))


def test_debug_pod_with_run_i_rm(real: tuple[Cluster, str]) -> None:
    cluster, _ = real
    result = cluster.kubectl("run", "-i", "--rm", "debug",
                             "--image=gihyodocker/fundamental:0.1.0", "--restart=Never", "--",
                             "bash", "-c", "read line; echo got-$line; curl --version | head -1",
                             input="hello\n", timeout=180)
    assert "got-hello" in result.stdout
    assert "curl" in result.stdout
    assert pod(cluster, "debug") == {}  # --rm removed it


def test_job_runs_a_real_container_to_completion(real: tuple[Cluster, str]) -> None:
    cluster, _ = real
    cluster.kubectl("create", "job", "once", "--image=busybox", "--", "sh", "-c", "echo done")
    cluster.kubectl("wait", "--for=condition=complete", "job/once", "--timeout=180s")
    assert "done" in cluster.kubectl("logs", "job/once").stdout
    cluster.kubectl("delete", "job", "once")


def test_statefulset_keeps_its_volume_across_pod_deletion(real: tuple[Cluster, str]) -> None:
    cluster, _ = real
    cluster.kubectl("apply", "-f", "-", input="""
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: store}
spec:
  serviceName: store
  replicas: 1
  selector: {matchLabels: {app: store}}
  template:
    metadata: {labels: {app: store}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        command: [sh, -c, "cat /data/note 2>/dev/null; echo kept > /data/note; sleep 3600"]
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 10Mi}}
""")
    cluster.kubectl("rollout", "status", "statefulset", "store", "--timeout=180s")
    claim = json.loads(cluster.kubectl("get", "pvc", "data-store-0", "-o", "json").stdout)
    assert claim["status"]["phase"] == "Bound"
    assert claim["spec"]["storageClassName"] == "local-path"
    first_uid = pod(cluster, "store-0")["metadata"]["uid"]
    cluster.kubectl("delete", "pod", "store-0")

    def replaced() -> bool:
        again = pod(cluster, "store-0")
        return bool(again) and again["metadata"]["uid"] != first_uid and \
            again["status"].get("phase") == "Running"

    wait_for(replaced, cluster=cluster)
    wait_for(lambda: "kept" in cluster.kubectl("logs", "store-0", check=False).stdout)
    cluster.kubectl("delete", "statefulset", "store")
    cluster.kubectl("delete", "pvc", "data-store-0")


def _jobs_of(cluster: Cluster, cronjob: str) -> list[dict]:
    """The live Jobs the CronJob controls, oldest first."""
    jobs = json.loads(cluster.kubectl("get", "jobs", "-o", "json").stdout)["items"]
    return sorted((j for j in jobs
                   if any(ref.get("kind") == "CronJob" and ref.get("name") == cronjob
                          for ref in j["metadata"].get("ownerReferences") or [])
                   and "deletionTimestamp" not in j["metadata"]),
                  key=lambda j: j["metadata"]["creationTimestamp"])


def test_cronjob_runs_real_containers_on_schedule(real: tuple[Cluster, str]) -> None:
    cluster, _ = real
    cluster.kubectl("create", "cronjob", "tick", "--image=busybox", "--schedule=*/1 * * * *",
                    "--", "sh", "-c", "echo tick-from-$(hostname)")
    try:
        cluster.kubectl("patch", "cronjob", "tick", "--type=merge", "-p",
                        '{"spec":{"successfulJobsHistoryLimit":1}}')
        # A run by hand (no minute's wait), then the controller's own on the minute.
        cluster.kubectl("create", "job", "tick-by-hand", "--from=cronjob/tick")
        cluster.kubectl("wait", "--for=condition=complete", "job/tick-by-hand",
                        "--timeout=180s")
        assert "tick-from-tick-by-hand-" in cluster.kubectl("logs", "job/tick-by-hand").stdout

        def scheduled() -> str:
            names = [j["metadata"]["name"] for j in _jobs_of(cluster, "tick")
                     if "batch.kubernetes.io/cronjob-scheduled-timestamp"
                     in (j["metadata"].get("annotations") or {})]
            return names[0] if names else ""

        name = str(wait_for(scheduled, timeout=90, cluster=cluster))
        # No second scheduled run while the history is checked.
        cluster.kubectl("patch", "cronjob", "tick", "--type=merge", "-p",
                        '{"spec":{"suspend":true}}')
        assert name.startswith("tick-") and name[len("tick-"):].isdigit()
        cluster.kubectl("wait", "--for=condition=complete", f"job/{name}", "--timeout=180s")
        assert f"tick-from-{name}-" in cluster.kubectl("logs", f"job/{name}").stdout
        header, row = cluster.kubectl("get", "cronjob", "tick").stdout.splitlines()
        column = header.index("LAST SCHEDULE")
        last_schedule = row[column:].split()[0]
        assert re.fullmatch(r"\d+[smhd](\d+[smh])?", last_schedule), (header, row)
        status = json.loads(cluster.kubectl("get", "cronjob", "tick", "-o", "json").stdout)[
            "status"]
        assert status["lastScheduleTime"] and status["lastSuccessfulTime"]

        # successfulJobsHistoryLimit 1: a newer finished Job prunes the older ones.
        cluster.kubectl("create", "job", "tick-latest", "--from=cronjob/tick")
        cluster.kubectl("wait", "--for=condition=complete", "job/tick-latest",
                        "--timeout=180s")
        wait_for(lambda: [j["metadata"]["name"] for j in _jobs_of(cluster, "tick")]
                 == ["tick-latest"], timeout=60, cluster=cluster)
        # Their pods went with them (background propagation).
        wait_for(lambda: not [p for p in cluster.kubectl(
            "get", "pods", "-o", "name").stdout.split()
            if p.startswith(("pod/tick-by-hand-", f"pod/{name}-"))], timeout=60)
    finally:
        cluster.kubectl("delete", "cronjob", "tick", "--cascade=foreground", check=False)
