"""The proxy subresources end to end: a real `kubi server` with its node agent in a
network namespace this test makes, the book's echo pods (images from a local registry
mirrored as docker.io), the real kubectl and curl.

- services/NAME[:PORT]/proxy/… and pods/NAME[:PORT]/proxy/…: the API server tunnels
  through the pod's node agent into the pod's network namespace;
- nodes/NAME/proxy/…: the agent's own endpoints (healthz, pods, stats/summary, configz,
  metrics);
- `kubectl proxy` then curl, as users run it.

Skipped only without root, runc, ip, nft, nsenter, unshare, curl, kubectl or the
registry (docker-registry) and image tools."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kubi.api.durations import go_duration_seconds
from kubi.apiserver.proxy import _Location, _rewrite_location, split_scheme_name_port
from kubi.kubelet import stats
from kubi.kubelet.agent import AgentConfig
from tests.cluster import Cluster, free_port, start_cluster, wait_for
from tests.conftest_registry import LocalRegistry
from tests.kubelet.agent_env import AgentNode, cleanup_node, new_netns, require_tools

T = TypeVar("T")
NODE = "proxy-node"
SEED = Path(__file__).resolve().parents[4] / "shared" / "seed" / "manifests"


# -- pure functions --------------------------------------------------------------------------


def test_scheme_name_port_forms_as_upstream() -> None:
    assert split_scheme_name_port("echo") == ("", "echo", "")
    assert split_scheme_name_port("echo:80") == ("", "echo", "80")
    assert split_scheme_name_port("https:echo:443") == ("https", "echo", "443")
    assert split_scheme_name_port("echo:http") == ("", "echo", "http")
    assert split_scheme_name_port("ftp:echo:21") is None
    assert split_scheme_name_port("a:b:c:d") is None
    assert split_scheme_name_port(":80") is None


def test_redirects_to_the_backend_stay_behind_the_proxy() -> None:
    here = _Location("http", "10.244.9.5", 8080)
    prefix = "/api/v1/namespaces/default/pods/p:8080/proxy"
    assert _rewrite_location("/login?next=a", here, prefix) == f"{prefix}/login?next=a"
    assert _rewrite_location("http://10.244.9.5:8080/x", here, prefix) == f"{prefix}/x"
    assert _rewrite_location("http://example.com/x", here, prefix) == "http://example.com/x"
    assert _rewrite_location("relative", here, prefix) == "relative"


def test_go_durations() -> None:
    assert [go_duration_seconds(s) for s in (0, 0.5, 10, 60, 90, 3600, 3725)] == [
        "0s", "500ms", "10s", "1m0s", "1m30s", "1h0m0s", "1h2m5s"]


def test_node_usage_reads_this_machine() -> None:
    usage = stats.node_usage()
    assert usage.cpu_ns is not None and usage.cpu_ns > 0
    assert usage.memory_limit is not None and usage.working_set is not None
    assert 0 < usage.working_set <= usage.memory_limit
    assert stats.process_cgroup(os.getpid()) is not None


def test_filesystem_stats(tmp_path: Path) -> None:
    fs = stats.filesystem(tmp_path)
    assert fs is not None
    assert 0 <= fs["availableBytes"] <= fs["capacityBytes"]
    assert fs["usedBytes"] + fs["availableBytes"] <= fs["capacityBytes"]
    assert fs["inodesUsed"] + fs["inodesFree"] == fs["inodes"]
    assert stats.filesystem(tmp_path / "missing") is None


def test_resource_metrics_from_a_summary() -> None:
    text = stats.resource_metrics({
        "node": {"cpu": {"usageCoreNanoSeconds": 2_500_000_000},
                 "memory": {"workingSetBytes": 1024}},
        "pods": [{"podRef": {"name": "p", "namespace": "ns", "uid": "u"},
                  "memory": {"workingSetBytes": 10},
                  "containers": [{"name": "c", "startTime": "2024-01-01T00:00:00Z",
                                  "cpu": {"usageCoreNanoSeconds": 1_000_000_000}}]}]})
    assert re.search(r"^node_cpu_usage_seconds_total 2\.5 \d+$", text, re.M)
    assert re.search(r'^container_cpu_usage_seconds_total\{container="c",namespace="ns",'
                     r'pod="p"\} 1\.0 \d+$', text, re.M)
    assert re.search(r'^container_start_time_seconds\{container="c",namespace="ns",'
                     r'pod="p"\} 1704067200 \d+$', text, re.M)
    assert re.search(r'^pod_memory_working_set_bytes\{namespace="ns",pod="p"\} 10 ', text,
                     re.M)
    assert "container_memory_working_set_bytes" not in text  # not measured: not printed


# -- a real cluster ------------------------------------------------------------------------



@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory, registry: LocalRegistry) -> Iterator[
        Cluster]:
    require_tools("curl", "kubectl")
    netns = new_netns()
    data = tmp_path_factory.mktemp("kubi-proxy")
    cluster: Cluster | None = None
    try:
        cluster = start_cluster(data, "--registries", str(registry.registries_yaml),
                                "--node-name", NODE, agent_netns=netns)
        wait_for(lambda: " Ready " in cluster.kubectl("get", "nodes").stdout)
        cluster.kubectl("apply", "-f", str(SEED / "simple-replicaset-with-label.yml"),
                        "-f", str(SEED / "simple-service.yml"))
        cluster.kubectl("create", "service", "clusterip", "lonely", "--tcp=80:8080")

        def summer_endpoints() -> int:
            found = cluster.kubectl("get", "endpoints", "echo", "-o", "json",
                                    check=False)
            if found.returncode:
                return 0
            subsets = json.loads(found.stdout).get("subsets") or []
            return sum(len(s.get("addresses") or []) for s in subsets)

        wait_for(lambda: summer_endpoints() == 2, cluster=cluster)
        yield cluster
    finally:
        if cluster is not None:
            cluster.kubectl("delete", "replicasets", "--all", "--wait=false", check=False)
            cluster.kubectl("delete", "pods", "--all", "--grace-period=0", "--force",
                            check=False)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and "echo-" in cluster.kubectl(
                    "get", "pods", check=False).stdout:
                time.sleep(0.5)
            cluster.stop()
        cleanup_node(AgentNode(AgentConfig(NODE, data / "agent"), netns, data / "agent",
                               f"/{netns}"))


def _raw(cluster: Cluster, path: str) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("get", "--raw", path, check=False)


def _pods(cluster: Cluster, release: str) -> list[dict[str, Any]]:
    listed = cluster.kubectl("get", "pods", "-l", f"release={release}", "-o", "json")
    return list(json.loads(listed.stdout)["items"])


def test_kubectl_proxy_reaches_the_books_echo_through_a_service(real: Cluster) -> None:
    port = free_port()
    proxy = subprocess.Popen(["kubectl", "proxy", f"--port={port}"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=real.env())
    try:
        assert proxy.stdout is not None
        assert "Starting to serve on 127.0.0.1" in proxy.stdout.readline()
        base = f"http://127.0.0.1:{port}/api/v1/namespaces/default"
        for service in ("echo:80", "echo:http", "http:echo:80"):
            answer = subprocess.run(["curl", "-sS", f"{base}/services/{service}/proxy/"],
                                    capture_output=True, text=True, timeout=30)
            assert answer.stdout == "Hello Docker!!", (service, answer)
        posted = subprocess.run(["curl", "-sS", "-X", "POST", "--data-binary", "body",
                                 "-w", "\n%{http_code}", f"{base}/services/echo:80/proxy/x"],
                                capture_output=True, text=True, timeout=30)
        assert posted.stdout == "Hello Docker!!\n200"
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)


def test_pod_proxy_forms(real: Cluster) -> None:
    pod = _pods(real, "summer")[0]
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    prefix = f"/api/v1/namespaces/default/pods/{name}"
    assert _raw(real, f"{prefix}:8080/proxy/").stdout == "Hello Docker!!"  # echo itself
    assert _raw(real, f"{prefix}/proxy/").stdout == "Hello Docker!!"  # first port: nginx
    assert _raw(real, f"{prefix}:http/proxy/anything").stdout == "Hello Docker!!"
    with real.http() as http:
        head = http.head(f"{prefix}:8080/proxy/")
        assert head.status_code == 200
        bare = http.get(f"{prefix}:8080/proxy", params={"a": "b"})
        assert bare.status_code == 301
        assert bare.headers["location"] == f"{prefix}:8080/proxy/?a=b"
        refused = http.get(f"{prefix}:9999/proxy/")
        assert refused.status_code == 503
        assert refused.json()["message"] == (
            f"error trying to reach service: dial tcp {ip}:9999: connect: connection refused")
        invalid = http.get("/api/v1/namespaces/default/pods/a:b:c:d/proxy/")
        assert invalid.status_code == 400
        assert invalid.json()["message"] == 'invalid pod request "a:b:c:d"'
        missing = http.get("/api/v1/namespaces/default/pods/nosuch/proxy/")
        assert missing.status_code == 404
        assert missing.json()["message"] == 'pods "nosuch" not found'
        # a pod that never runs has no IP
        http.post("/api/v1/namespaces/default/pods", json={
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nowhere"},
            "spec": {"nodeSelector": {"no": "such-node"},
                     "containers": [{"name": "c", "image": "busybox"}]}}).raise_for_status()
        unplaced = http.get("/api/v1/namespaces/default/pods/nowhere/proxy/")
        assert unplaced.status_code == 400
        assert unplaced.json()["message"] == "address not allowed"


def test_service_proxy_errors_read_as_upstream(real: Cluster) -> None:
    with real.http() as http:
        base = "/api/v1/namespaces/default/services"
        none = http.get(f"{base}/lonely:80/proxy/")
        assert none.status_code == 503
        assert none.json()["message"] == 'no endpoints available for service "lonely"'
        assert none.json()["reason"] == "ServiceUnavailable"
        port = http.get(f"{base}/echo:81/proxy/")
        assert port.status_code == 503
        assert port.json()["message"] == 'no service port 81 found for service "echo"'
        named = http.get(f"{base}/echo:bogus/proxy/")
        assert named.status_code == 503
        assert named.json()["message"] == 'no endpoints available for service "echo:bogus"'
        invalid = http.get(f"{base}/ftp:echo:80/proxy/")
        assert invalid.status_code == 400
        assert invalid.json()["message"] == 'invalid service request "ftp:echo:80"'
        # as upstream: a port number is looked up in the Service, else in its Endpoints
        missing = http.get(f"{base}/nosuch:80/proxy/")
        assert missing.status_code == 404
        assert missing.json()["message"] == 'services "nosuch" not found'
        missing = http.get(f"{base}/nosuch/proxy/")
        assert missing.status_code == 404
        assert missing.json()["message"] == 'endpoints "nosuch" not found'
        # the proxy takes methods and Accept headers the API itself refuses
        options = http.options(f"{base}/echo:80/proxy/", headers={"Accept": "text/html"})
        assert options.status_code == 200
        assert options.text == "Hello Docker!!"


def test_node_proxy_reaches_the_agents_endpoints(real: Cluster) -> None:
    base = f"/api/v1/nodes/{NODE}/proxy"
    assert _raw(real, f"{base}/healthz").stdout == "ok"
    pods = json.loads(_raw(real, f"{base}/pods").stdout)
    assert pods["kind"] == "PodList"
    summer = {p["metadata"]["name"] for p in _pods(real, "summer")}
    assert summer <= {p["metadata"]["name"] for p in pods["items"]}

    summary = json.loads(_raw(real, f"{base}/stats/summary").stdout)
    node = summary["node"]
    assert node["memory"]["workingSetBytes"] > 0
    assert node["cpu"]["usageCoreNanoSeconds"] > 0 and "usageNanoCores" in node["cpu"]
    assert node["nodeName"] and node["startTime"].endswith("Z")
    by_name = {p["podRef"]["name"]: p for p in summary["pods"]}
    for name in summer:
        measured = by_name[name]
        assert measured["podRef"]["namespace"] == "default"
        assert measured["memory"]["workingSetBytes"] > 0
        assert measured["cpu"]["usageCoreNanoSeconds"] > 0
        assert {c["name"] for c in measured["containers"]} == {"nginx", "echo"}
        assert all(c["memory"]["workingSetBytes"] > 0 for c in measured["containers"])
        assert measured["network"]["name"] == "eth0"
        assert isinstance(measured["network"]["rxBytes"], int)

    configz = json.loads(_raw(real, f"{base}/configz").stdout)
    settings = configz["kubeletconfig"]
    assert settings["kind"] == "KubeletConfiguration"
    # The agent's own settings: the port it really bound, its image GC thresholds.
    assert settings["port"] > 0 and settings["port"] != 10250  # tests bind a free port
    assert (settings["imageGCHighThresholdPercent"], settings["imageGCLowThresholdPercent"]) \
        == (85, 80)
    metrics = _raw(real, f"{base}/metrics/resource").stdout
    assert re.search(r'^container_memory_working_set_bytes\{container="echo",'
                     r'namespace="default",pod="echo-summer-\w+"\} \d+ \d+$', metrics, re.M)
    assert "kubelet_running_pods" in _raw(real, f"{base}/metrics").stdout

    with real.http() as http:
        unknown = http.get(f"{base}/nosuch")
        assert unknown.status_code == 404
        assert "404 page not found" in unknown.text
        missing = http.get("/api/v1/nodes/nosuch/proxy/healthz")
        assert missing.status_code == 404
        assert missing.json()["message"] == 'nodes "nosuch" not found'
        invalid = http.get("/api/v1/nodes/a:b:c:d/proxy/healthz")
        assert invalid.status_code == 400
        assert invalid.json()["message"] == 'invalid node request "a:b:c:d"'
