"""The book's replicaset and deployment walkthrough, typed verbatim into the real kubectl,
on a cluster whose nodes are simulated (pods run through their lifecycle without containers)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster, start_cluster


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("kubi-sim"), "--simulated-nodes", "2")
    yield cluster
    cluster.stop()


def wait_for(check: Callable[[], object], timeout: float = 90) -> None:
    """Poll until `check()` is truthy; the timeout only bounds a hang."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return
        time.sleep(0.2)
    raise AssertionError(f"condition not met; last value {last!r}")


def pods(cluster: Cluster, *selector: str) -> list[dict]:
    out = cluster.kubectl("get", "pod", *selector, "-o", "json").stdout
    return [p for p in json.loads(out)["items"] if "deletionTimestamp" not in p["metadata"]]


def running(cluster: Cluster, *selector: str) -> list[dict]:
    return [p for p in pods(cluster, *selector) if p["status"].get("phase") == "Running"]


def test_nodes_are_ready(sim: Cluster) -> None:
    wait_for(lambda: sim.kubectl("get", "nodes").stdout.count(" Ready ") == 2)


def test_replicaset_makes_three_pods(sim: Cluster, seed_dir: Path) -> None:
    manifest = str(seed_dir / "manifests" / "simple-replicaset.yml")
    sim.kubectl("apply", "-f", manifest)
    wait_for(lambda: len(running(sim, "-l", "app=echo")) == 3)
    table = sim.kubectl("get", "pod").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert sum(1 for row in table[1:] if row.split()[1:3] == ["2/2", "Running"]) == 3
    sim.kubectl("delete", "-f", manifest)
    wait_for(lambda: not pods(sim, "-l", "app=echo"))


def test_deployment_walkthrough(sim: Cluster, seed_dir: Path, tmp_path: Path) -> None:
    original = (seed_dir / "manifests" / "simple-deployment.yml").read_text()
    manifest = tmp_path / "simple-deployment.yml"
    manifest.write_text(original)
    watcher = subprocess.Popen(["kubectl", "get", "pod", "-l", "app=echo", "-w"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env=sim.env())
    try:
        sim.kubectl("apply", "-f", str(manifest), "--record")
        wait_for(lambda: len(running(sim, "-l", "app=echo")) == 3)
        listed = sim.kubectl("get", "pod,replicaset,deployment", "--selector", "app=echo").stdout
        assert "deployment.apps/echo" in listed and "replicaset.apps/echo-" in listed
        history = sim.kubectl("rollout", "history", "deployment", "echo").stdout
        rows = [r.split() for r in history.splitlines() if r[:1].isdigit()]
        assert [r[0] for r in rows] == ["1"]
        assert "kubectl apply" in history  # the --record change-cause

        # replicas 3 -> 4: one more pod, no new ReplicaSet, still revision 1
        manifest.write_text(original.replace("replicas: 3", "replicas: 4"))
        sim.kubectl("apply", "-f", str(manifest), "--record")
        wait_for(lambda: len(running(sim, "-l", "app=echo")) == 4)
        history = sim.kubectl("rollout", "history", "deployment", "echo").stdout
        assert [r.split()[0] for r in history.splitlines() if r[:1].isdigit()] == ["1"]

        # image change -> revision 2, pods replaced
        first_pods = {p["metadata"]["name"] for p in running(sim, "-l", "app=echo")}
        manifest.write_text(original.replace("replicas: 3", "replicas: 4")
                            .replace("gihyodocker/echo:latest", "gihyodocker/echo:patched"))
        sim.kubectl("apply", "-f", str(manifest), "--record")

        def rolled() -> bool:
            now = running(sim, "-l", "app=echo")
            images = {c["image"] for p in now for c in p["spec"]["containers"]}
            return (len(now) == 4 and "gihyodocker/echo:patched" in images
                    and "gihyodocker/echo:latest" not in images)

        wait_for(rolled)
        assert not first_pods & {p["metadata"]["name"] for p in running(sim, "-l", "app=echo")}
        history = sim.kubectl("rollout", "history", "deployment", "echo").stdout
        assert [r.split()[0] for r in history.splitlines() if r[:1].isdigit()] == ["1", "2"]
        revision1 = sim.kubectl("rollout", "history", "deployment", "echo",
                                "--revision=1").stdout
        assert "gihyodocker/echo:latest" in revision1

        sim.kubectl("rollout", "undo", "deployment", "echo")

        def undone() -> bool:
            now = running(sim, "-l", "app=echo")
            images = {c["image"] for p in now for c in p["spec"]["containers"]}
            return len(now) == 4 and images == {"gihyodocker/nginx:latest",
                                                "gihyodocker/echo:latest"}

        wait_for(undone)
        history = sim.kubectl("rollout", "history", "deployment", "echo").stdout
        assert [r.split()[0] for r in history.splitlines() if r[:1].isdigit()] == ["2", "3"]
        sim.kubectl("delete", "-f", str(manifest))
        wait_for(lambda: not pods(sim, "-l", "app=echo"))
    finally:
        watcher.terminate()
        out, _ = watcher.communicate(timeout=10)
    # get -w streamed the pods through their phases
    assert "Pending" in out or "ContainerCreating" in out
    assert "Running" in out


def test_labelled_replicasets_and_selectors(sim: Cluster, seed_dir: Path) -> None:
    manifest = str(seed_dir / "manifests" / "simple-replicaset-with-label.yml")
    sim.kubectl("apply", "-f", manifest)
    wait_for(lambda: len(running(sim, "-l", "app=echo")) == 3)
    spring = sim.kubectl("get", "pod", "-l", "app=echo", "-l", "release=spring").stdout
    summer = sim.kubectl("get", "pod", "-l", "app=echo", "-l", "release=summer").stdout
    assert "echo-spring" in spring and "echo-summer" not in spring
    assert summer.count("echo-summer") == 2 and "echo-spring" not in summer
    sim.kubectl("delete", "-f", manifest)
    wait_for(lambda: not pods(sim, "-l", "app=echo"))


def test_rollout_commands(sim: Cluster) -> None:
    sim.kubectl("create", "deployment", "web", "--image=nginx:1.26", "--replicas=2")
    status = sim.kubectl("rollout", "status", "deployment", "web", "--timeout=90s").stdout
    assert 'deployment "web" successfully rolled out' in status
    sim.kubectl("set", "image", "deployment/web", "nginx=nginx:1.27")
    sim.kubectl("rollout", "status", "deployment", "web", "--timeout=90s")
    sim.kubectl("rollout", "restart", "deployment", "web")
    sim.kubectl("rollout", "status", "deployment", "web", "--timeout=90s")
    history = sim.kubectl("rollout", "history", "deployment", "web").stdout
    assert [r.split()[0] for r in history.splitlines() if r[:1].isdigit()] == ["1", "2", "3"]

    sim.kubectl("rollout", "pause", "deployment", "web")
    sim.kubectl("set", "image", "deployment/web", "nginx=nginx:1.28")
    paused = json.loads(sim.kubectl("get", "deploy", "web", "-o", "json").stdout)
    assert paused["spec"]["paused"] is True
    history = sim.kubectl("rollout", "history", "deployment", "web").stdout
    assert [r.split()[0] for r in history.splitlines() if r[:1].isdigit()] == ["1", "2", "3"]
    sim.kubectl("rollout", "resume", "deployment", "web")
    sim.kubectl("rollout", "status", "deployment", "web", "--timeout=90s")

    sim.kubectl("rollout", "undo", "deployment", "web", "--to-revision=1")
    sim.kubectl("rollout", "status", "deployment", "web", "--timeout=90s")
    web = json.loads(sim.kubectl("get", "deploy", "web", "-o", "json").stdout)
    assert web["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.26"
    bad = sim.kubectl("rollout", "undo", "deployment", "web", "--to-revision=42", check=False)
    assert bad.returncode != 0 and "42" in bad.stderr
    sim.kubectl("delete", "deployment", "web")


def test_jobs_cronjobs_and_daemonsets(sim: Cluster) -> None:
    sim.kubectl("create", "cronjob", "tick", "--image=busybox", "--schedule=*/5 * * * *",
                "--", "true")
    sim.kubectl("create", "job", "manual", "--from=cronjob/tick")
    wait_for(lambda: json.loads(sim.kubectl("get", "job", "manual", "-o", "json").stdout)[
        "status"].get("succeeded") == 1)
    job = json.loads(sim.kubectl("get", "job", "manual", "-o", "json").stdout)
    assert job["metadata"]["ownerReferences"][0]["name"] == "tick"
    row = sim.kubectl("get", "job", "manual").stdout.splitlines()[1].split()
    assert row[:3] == ["manual", "Complete", "1/1"]
    sim.kubectl("create", "-f", "-", input="""
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: a, image: busybox}]}
""")
    wait_for(lambda: len(running(sim, "-l", "app=agent")) == 2)
    nodes = {p["spec"]["nodeName"] for p in running(sim, "-l", "app=agent")}
    assert len(nodes) == 2
    sim.kubectl("delete", "daemonset", "agent")
    sim.kubectl("delete", "cronjob", "tick")
    wait_for(lambda: not pods(sim, "-l", "app=agent"))
