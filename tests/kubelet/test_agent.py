"""The node agent end to end: the in-process API server, the agent over runc inside a
network namespace playing the node, images from a real local registry."""

from __future__ import annotations

import asyncio
import ipaddress
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kubi.api.errors import StatusError
from kubi.client.rest import Client
from kubi.kubelet.agent import run_agent
from kubi.kubelet.runtime import cgroups
from tests.conftest_registry import LocalRegistry
from tests.harness import api_server, eventually, running
from tests.kubelet.agent_env import (
    POD_CIDR,
    AgentNode,
    agent_node,
    http_get,
    mounts_under,
    namespaces_of,
    processes_under,
)

SEED = Path(__file__).resolve().parents[3] / "shared" / "seed" / "manifests"
Obj = dict[str, Any]
T = TypeVar("T")


async def until(check: Callable[[], Awaitable[T | None]], timeout: float) -> T:
    """`eventually` for checks that return the object they waited for."""
    result = await eventually(check, timeout)
    assert result is not None
    return result


def run_scenario(coroutine: Any, limit: float = 150.0) -> None:
    """asyncio.run with a watchdog that shows every task's stack if the test hangs."""
    async def guarded() -> None:
        main = asyncio.ensure_future(coroutine)

        async def watchdog() -> None:
            await asyncio.sleep(limit)
            for task in asyncio.all_tasks():
                task.print_stack(file=sys.stderr)
            main.cancel()

        dog = asyncio.ensure_future(watchdog())
        try:
            await main
        finally:
            dog.cancel()

    asyncio.run(guarded())


def simple_pod() -> Obj:
    path = SEED / "simple-pod.yml"
    if path.exists():
        pod: Obj = yaml.safe_load(path.read_text())
    else:  # the seed's manifest, as the book wrote it
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "simple-echo"},
               "spec": {"containers": [
                   {"name": "nginx", "image": "gihyodocker/nginx:latest",
                    "env": [{"name": "BACKEND_HOST", "value": "localhost:8080"}],
                    "ports": [{"containerPort": 80}]},
                   {"name": "echo", "image": "gihyodocker/echo:latest",
                    "ports": [{"containerPort": 8080}]}]}}
    pod["spec"]["nodeName"] = "node-1"
    return pod


def busybox_pod(name: str, command: list[str], **spec: Any) -> Obj:
    container = {"name": spec.pop("container_name", "main"), "image": "busybox:latest",
                 "command": command, **spec.pop("container", {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 2,
                     "containers": [container], **spec}}


async def get_pod(client: Client, name: str, namespace: str = "default") -> Obj:
    return await client.get("pods", name, namespace)


async def events_of(client: Client, name: str, namespace: str = "default") -> list[Obj]:
    listed = await client.list("events", namespace)
    return [e for e in listed["items"] if e["involvedObject"].get("name") == name]


def container_status(pod: Obj, name: str) -> Obj:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status["name"] == name:
            return dict(status)
    raise AssertionError(f"no status of container {name} yet")


async def gone(client: Client, name: str, namespace: str = "default") -> bool:
    try:
        await client.get("pods", name, namespace)
    except StatusError as err:
        return err.code == 404
    return False


def assert_nothing_left(node: AgentNode, uid: str) -> None:
    assert processes_under(node.data_dir / "runtime" / "containers") == []
    assert mounts_under(node.data_dir) == [], (
        list((node.data_dir / "runtime" / "sandboxes").iterdir()),
        list((node.data_dir / "runtime" / "containers").iterdir()))
    assert namespaces_of(node) == []
    assert cgroups.directories(f"{node.cgroup_root}/pod{uid}") == []
    assert not (node.data_dir / "pods" / uid).exists()


def test_simple_pod_serves_through_nginx_and_survives_an_agent_restart(
        tmp_path: Path, registry: LocalRegistry) -> None:
    async def scenario(node: AgentNode) -> None:
        async with api_server(tmp_path) as (_, client):
            await client.create("pods", simple_pod(), "default")
            agent = asyncio.ensure_future(run_agent(client, node.config))
            try:
                async def running_and_ready() -> Obj | None:
                    pod = await get_pod(client, "simple-echo")
                    statuses = pod["status"].get("containerStatuses") or []
                    ok = pod["status"].get("phase") == "Running" and len(statuses) == 2 \
                        and all(s["ready"] for s in statuses)
                    return pod if ok else None

                pod = await until(running_and_ready, 60)
                status = pod["status"]
                ip = status["podIP"]
                assert ipaddress.ip_address(ip) in ipaddress.ip_network(POD_CIDR)
                assert status["podIPs"] == [{"ip": ip}]
                assert status["hostIP"] == node.config.node_ip
                assert status["startTime"]
                conditions = {c["type"]: c["status"] for c in status["conditions"]}
                assert conditions == {"PodReadyToStartContainers": "True",
                                      "Initialized": "True", "Ready": "True",
                                      "ContainersReady": "True", "PodScheduled": "True"}
                echo = container_status(pod, "echo")
                assert echo["image"] == "docker.io/gihyodocker/echo:latest"
                assert echo["imageID"].startswith("docker.io/gihyodocker/echo@sha256:")
                assert echo["containerID"].startswith(("runc://", "crun://"))
                assert echo["started"] is True and echo["restartCount"] == 0
                assert "running" in echo["state"]

                async def hello() -> str | None:
                    try:
                        code, body = await http_get(node, ip, 80)
                    except Exception:
                        return None
                    return body if code == 200 else None

                assert await eventually(hello, 30) == "Hello Docker!!"
                uid = pod["metadata"]["uid"]
                log = node.data_dir / "logs" / f"default_simple-echo_{uid}" / "echo" / "0.log"
                await eventually(lambda: asyncio.sleep(0, "received request" in log.read_text()),
                                 10)

                reasons = {e["reason"] for e in await events_of(client, "simple-echo")}
                assert {"Pulling", "Pulled", "Created", "Started"} <= reasons

                node_obj = await client.get("nodes", "node-1")
                assert node_obj["spec"]["podCIDR"] == POD_CIDR
                info = node_obj["status"]["nodeInfo"]
                assert info["containerRuntimeVersion"].startswith(("runc://", "crun://"))
                assert info["kubeletVersion"] == "v1.32.0+kubi"
                assert node_obj["status"]["capacity"]["pods"] == "110"
                assert {"type": "InternalIP", "address": node.config.node_ip} in \
                    node_obj["status"]["addresses"]
                lease = await client.get("leases.coordination.k8s.io", "node-1",
                                         "kube-node-lease")
                assert lease["spec"]["holderIdentity"] == "node-1"
                ids = {s["containerID"] for s in status["containerStatuses"]}
            finally:
                agent.cancel()
                await asyncio.gather(agent, return_exceptions=True)

            # A new agent adopts the running containers: same ids, no duplicates.
            async with running(run_agent(client, node.config)):
                await asyncio.sleep(1.0)  # let it sync the pod at least once

                async def adopted() -> bool:
                    pod = await get_pod(client, "simple-echo")
                    now = {s["containerID"] for s in pod["status"]["containerStatuses"]}
                    return now == ids and all(
                        s["ready"] for s in pod["status"]["containerStatuses"])

                await eventually(adopted, 30)
                code, body = await http_get(node, ip, 80)
                assert (code, body) == (200, "Hello Docker!!")
                dirs = list((node.data_dir / "runtime" / "containers").iterdir())
                assert len(dirs) == 2

                await client.delete("pods", "simple-echo", "default")
                await eventually(lambda: gone(client, "simple-echo"), 60)
                await eventually(lambda: asyncio.sleep(0, not processes_under(
                    node.data_dir / "runtime" / "containers")), 20)
                assert_nothing_left(node, uid)

    with agent_node(tmp_path, registry) as node:
        run_scenario(scenario(node))


def runtime_of(node: AgentNode) -> Any:
    from kubi.kubelet.runtime.oci import OciRuntime

    return OciRuntime(node.data_dir / "runtime", None, cgroup_root=node.cgroup_root)


def test_job_completes_crash_loops_back_off_and_missing_images_back_off(
        tmp_path: Path, registry: LocalRegistry) -> None:
    from kubi.controllers.manager import run_controllers
    from kubi.scheduler.scheduler import run_scheduler

    async def scenario(node: AgentNode) -> None:
        async with api_server(tmp_path) as (_, client):
            job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
                   "spec": {"backoffLimit": 0, "template": {"spec": {
                       "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                       "containers": [{"name": "work", "image": "busybox:latest",
                                       "command": ["sh", "-c", "echo done"]}]}}}}
            await client.create("jobs.batch", job, "default")
            await client.create("pods", busybox_pod("crash", ["sh", "-c", "exit 3"]),
                                "default")
            missing = busybox_pod("missing", ["true"])
            missing["spec"]["containers"][0]["image"] = "gihyodocker/nosuchimage:1.0"
            await client.create("pods", missing, "default")
            async with running(run_agent(client, node.config),
                               run_controllers(client, only={"job"}),
                               run_scheduler(client)):
                async def job_done() -> bool:
                    got = await client.get("jobs.batch", "once", "default")
                    return (got.get("status") or {}).get("succeeded") == 1

                await eventually(job_done, 60)
                pods = (await client.list("pods", "default",
                                          label_selector="job-name=once"))["items"]
                assert [p["status"]["phase"] for p in pods] == ["Succeeded"]
                terminated = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
                assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"

                # CrashLoopBackOff: the restarts wait longer and longer (base 1s).
                seen: list[str] = []

                async def backed_off_twice() -> bool:
                    status = container_status(await get_pod(client, "crash"), "main")
                    waiting = status["state"].get("waiting") or {}
                    if waiting.get("reason") == "CrashLoopBackOff" and \
                            waiting["message"] not in seen:
                        seen.append(waiting["message"])
                        assert status["lastState"]["terminated"]["exitCode"] == 3
                        assert status["lastState"]["terminated"]["reason"] == "Error"
                    return len(seen) >= 2

                await eventually(backed_off_twice, 60, interval=0.1)
                uid = (await get_pod(client, "crash"))["metadata"]["uid"]
                delays = []
                for message in seen:
                    head, _, tail = message.partition(" restarting failed ")
                    assert tail == f"container=main pod=crash_default({uid})"
                    delays.append(int(head.removeprefix("back-off ").removesuffix("s")))
                assert delays[1] == 2 * delays[0], delays  # base 1s, doubling
                crash = await get_pod(client, "crash")
                assert crash["status"]["phase"] == "Running"
                assert container_status(crash, "main")["restartCount"] >= 2
                reasons = [e["reason"] for e in await events_of(client, "crash")]
                assert "BackOff" in reasons

                # A missing image: ErrImagePull, then ImagePullBackOff.
                reasons_seen: set[str] = set()

                async def pull_backed_off() -> bool:
                    status = container_status(await get_pod(client, "missing"), "main")
                    waiting = status["state"].get("waiting") or {}
                    reasons_seen.add(str(waiting.get("reason")))
                    return {"ErrImagePull", "ImagePullBackOff"} <= reasons_seen

                await eventually(pull_backed_off, 60, interval=0.05)
                events = await events_of(client, "missing")
                failed = [e["message"] for e in events if e["reason"] == "Failed"]
                assert any('Failed to pull image "gihyodocker/nosuchimage:1.0"' in message
                           for message in failed), failed
                assert "Error: ErrImagePull" in failed
                assert any(e["reason"] == "BackOff" and "nosuchimage" in e["message"]
                           for e in events)
                missing_pod = await get_pod(client, "missing")
                assert missing_pod["status"]["phase"] == "Pending"

    with agent_node(tmp_path, registry) as node:
        run_scenario(scenario(node))


def test_readiness_gates_ready_and_liveness_failure_restarts(
        tmp_path: Path, registry: LocalRegistry) -> None:
    async def scenario(node: AgentNode) -> None:
        pod = busybox_pod("probed", ["httpd", "-f", "-p", "8080", "-h", "/tmp"], container={
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080},
                               "periodSeconds": 1, "failureThreshold": 1}})
        pod["spec"]["containers"].append({
            "name": "live", "image": "busybox:latest", "command": ["sleep", "3600"],
            "livenessProbe": {"tcpSocket": {"port": 9999}, "periodSeconds": 1,
                              "failureThreshold": 2}})
        async with api_server(tmp_path) as (_, client):
            await client.create("pods", pod, "default")
            async with running(run_agent(client, node.config)):
                async def running_not_ready() -> Obj | None:
                    got = await get_pod(client, "probed")
                    statuses = got["status"].get("containerStatuses") or []
                    return got if got["status"].get("phase") == "Running" and all(
                        "running" in s["state"] for s in statuses) else None

                got = await until(running_not_ready, 60)
                assert container_status(got, "main")["ready"] is False
                ready = next(c for c in got["status"]["conditions"] if c["type"] == "Ready")
                assert ready["status"] == "False"
                assert ready["reason"] == "ContainersNotReady"

                async def not_found_seen() -> bool:
                    return any(e["reason"] == "Unhealthy" and e["message"] ==
                               "Readiness probe failed: HTTP probe failed with statuscode: 404"
                               for e in await events_of(client, "probed"))

                await eventually(not_found_seen, 30)
                cid = container_status(got, "main")["containerID"].partition("://")[2]
                result = await runtime_of(node).exec_sync(cid, ["touch", "/tmp/ready"], 10)
                assert result.exit_code == 0

                async def main_ready() -> bool:
                    return bool(container_status(await get_pod(client, "probed"),
                                                 "main")["ready"])

                await eventually(main_ready, 30)

                async def restarted() -> bool:
                    status = container_status(await get_pod(client, "probed"), "live")
                    return status["restartCount"] >= 1

                await eventually(restarted, 60)
                events = await events_of(client, "probed")
                assert any(e["reason"] == "Unhealthy" and
                           e["message"].startswith("Liveness probe failed: dial tcp")
                           for e in events)
                assert any(e["reason"] == "Killing" and "failed liveness probe" in e["message"]
                           for e in events)

    with agent_node(tmp_path, registry) as node:
        run_scenario(scenario(node))


def test_volumes_env_and_dns(tmp_path: Path, registry: LocalRegistry) -> None:
    reader_script = (
        "while [ ! -s /data/file ]; do sleep 0.1; done; cat /data/file; "
        "cat /config/greeting; echo; cat /config/..data/renamed; echo; "
        "echo PW=$PASSWORD GREETING=$GREETING; cat /etc/resolv.conf; "
        "cat /info/labels; echo; cat /info/name; echo; "
        "grep ' /cache ' /proc/mounts; env | sort; sleep 3600")
    pod = busybox_pod("vols", ["sh", "-c", "echo shared > /data/file; sleep 3600"],
                      container_name="writer", container={
                          "volumeMounts": [{"name": "shared", "mountPath": "/data"}]})
    pod["metadata"]["labels"] = {"app": "vols"}
    pod["spec"]["containers"].append({
        "name": "reader", "image": "busybox:latest", "command": ["sh", "-c", reader_script],
        "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds",
                                                                    "key": "password"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "GREETING", "value": "$(POD_NAME) says $(MISSING) $$(POD_NAME)"}],
        "envFrom": [{"configMapRef": {"name": "app-config"}, "prefix": "CFG_"}],
        "volumeMounts": [{"name": "shared", "mountPath": "/data"},
                         {"name": "config", "mountPath": "/config"},
                         {"name": "info", "mountPath": "/info"},
                         {"name": "cache", "mountPath": "/cache"}]})
    pod["spec"]["volumes"] = [
        {"name": "shared", "emptyDir": {}},
        {"name": "cache", "emptyDir": {"medium": "Memory"}},
        {"name": "config", "configMap": {"name": "app-config", "items": [
            {"key": "greeting", "path": "greeting"},
            {"key": "other", "path": "renamed", "mode": 0o600}]}},
        {"name": "info", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}}]

    async def scenario(node: AgentNode) -> None:
        async with api_server(tmp_path) as (_, client):
            await client.create("configmaps", {
                "metadata": {"name": "app-config"},
                "data": {"greeting": "hello", "other": "x"}}, "default")
            await client.create("secrets", {
                "metadata": {"name": "creds"}, "stringData": {"password": "s3cr3t"}},
                "default")
            await client.create("services", {
                "metadata": {"name": "my-svc"},
                "spec": {"ports": [{"name": "web", "port": 8080}]}}, "default")
            await client.create("pods", pod, "default")
            async with running(run_agent(client, node.config)):
                async def ready() -> Obj | None:
                    got = await get_pod(client, "vols")
                    return got if got["status"].get("phase") == "Running" else None

                got = await until(ready, 60)
                uid = got["metadata"]["uid"]
                log = node.data_dir / "logs" / f"default_vols_{uid}" / "reader" / "0.log"

                async def logged() -> str | None:
                    text = log.read_text() if log.exists() else ""
                    lines = [line.split(" ", 3)[-1] for line in text.splitlines()]
                    output = "\n".join(lines)
                    return output if "HOSTNAME=" in output else None

                output = await until(logged, 30)
                lines = output.splitlines()
                assert lines[:3] == ["shared", "hello", "x"]
                assert "PW=s3cr3t GREETING=vols says $(MISSING) $(POD_NAME)" in lines
                assert "search default.svc.cluster.local svc.cluster.local cluster.local" \
                    in lines
                assert "nameserver 10.96.0.10" in lines and "options ndots:5" in lines
                assert 'app="vols"' in lines and "vols" in lines
                assert any(line.startswith("tmpfs /cache tmpfs") for line in lines)
                assert "CFG_greeting=hello" in lines
                service = await client.get("services", "my-svc", "default")
                ip = service["spec"]["clusterIP"]
                assert f"MY_SVC_SERVICE_HOST={ip}" in lines
                assert "MY_SVC_SERVICE_PORT_WEB=8080" in lines
                assert f"MY_SVC_PORT=tcp://{ip}:8080" in lines
                assert f"MY_SVC_PORT_8080_TCP_ADDR={ip}" in lines

                # configMap updates reach the running container through the ..data swap.
                config_map = await client.get("configmaps", "app-config", "default")
                config_map["data"]["greeting"] = "bonjour"
                await client.update("configmaps", config_map)
                cid = container_status(got, "reader")["containerID"].partition("://")[2]
                runtime = runtime_of(node)

                async def updated() -> bool:
                    result = await runtime.exec_sync(cid, ["cat", "/config/greeting"], 10)
                    return result.stdout == b"bonjour"

                await eventually(updated, 30)
                result = await runtime.exec_sync(cid, ["stat", "-L", "-c", "%a",
                                                       "/config/renamed"], 10)
                assert result.stdout.strip() == b"600"

                await client.delete("pods", "vols", "default")
                await eventually(lambda: gone(client, "vols"), 30)
                assert_nothing_left(node, uid)

    with agent_node(tmp_path, registry) as node:
        run_scenario(scenario(node))


def test_volume_errors_are_failed_mount_events(tmp_path: Path,
                                               registry: LocalRegistry) -> None:
    async def scenario(node: AgentNode) -> None:
        pod = busybox_pod("nocm", ["true"], container={
            "volumeMounts": [{"name": "config", "mountPath": "/config"}]})
        pod["spec"]["volumes"] = [{"name": "config", "configMap": {"name": "absent"}}]
        async with api_server(tmp_path) as (_, client):
            await client.create("pods", pod, "default")
            async with running(run_agent(client, node.config)):
                async def failed_mount() -> bool:
                    return any(e["reason"] == "FailedMount" and e["message"] ==
                               'MountVolume.SetUp failed for volume "config" : '
                               'configmap "absent" not found'
                               for e in await events_of(client, "nocm"))

                await eventually(failed_mount, 30)
                got = await get_pod(client, "nocm")
                assert got["status"]["phase"] == "Pending"
                waiting = container_status(got, "main")["state"]["waiting"]
                assert waiting["reason"] == "ContainerCreating"

    with agent_node(tmp_path, registry) as node:
        run_scenario(scenario(node))


def test_local_path_volume_keeps_data_across_pods(tmp_path: Path,
                                                  registry: LocalRegistry) -> None:
    from kubi.controllers.base import ControllerOptions
    from kubi.controllers.manager import run_controllers
    from kubi.scheduler.scheduler import run_scheduler

    def data_pod() -> Obj:
        pod = busybox_pod("data-0", ["sh", "-c", "[ -f /data/f ] || echo first > /data/f; "
                                                 "cat /data/f; sleep 3600"], container={
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]})
        del pod["spec"]["nodeName"]
        pod["spec"]["volumes"] = [{"name": "data",
                                   "persistentVolumeClaim": {"claimName": "data-data-0"}}]
        return pod

    async def scenario(node: AgentNode) -> None:
        options = ControllerOptions(extra={"data_dir": str(node.data_dir)})
        async with api_server(tmp_path) as (_, client), running(
                run_agent(client, node.config),
                run_controllers(client, options, only={
                    "persistentvolume-binder", "local-path-provisioner"}),
                run_scheduler(client)):
            async def has_class() -> bool:
                classes = await client.list("storageclasses.storage.k8s.io")
                return [c["metadata"]["name"] for c in classes["items"]] == ["local-path"]

            await eventually(has_class, 30)
            await client.create("persistentvolumeclaims", {
                "metadata": {"name": "data-data-0"},
                "spec": {"accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Gi"}}}}, "default")
            await client.create("pods", data_pod(), "default")

            async def output_of_pod() -> str | None:
                got = await get_pod(client, "data-0")
                if got["status"].get("phase") != "Running":
                    return None
                uid = got["metadata"]["uid"]
                log = node.data_dir / "logs" / f"default_data-0_{uid}" / "main" / "0.log"
                text = log.read_text() if log.exists() else ""
                return text.split(" ", 3)[-1].strip() if text else None

            assert await eventually(output_of_pod, 60) == "first"
            claim = await client.get("persistentvolumeclaims", "data-data-0", "default")
            volume = await client.get("persistentvolumes", claim["spec"]["volumeName"])
            path = Path(volume["spec"]["hostPath"]["path"])
            assert path == node.data_dir / "storage" / (
                f"{claim['metadata']['uid']}_default_data-data-0")
            assert volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0][
                "matchExpressions"][0]["values"] == ["node-1"]
            (path / "f").write_text("kept\n")

            await client.delete("pods", "data-0", "default")
            await eventually(lambda: gone(client, "data-0"), 30)
            await client.create("pods", data_pod(), "default")
            assert await eventually(output_of_pod, 60) == "kept"

            await client.delete("pods", "data-0", "default", grace_period=0)
            await eventually(lambda: gone(client, "data-0"), 30)
            await client.delete("persistentvolumeclaims", "data-data-0", "default")

            async def reclaimed() -> bool:
                return not path.exists()

            await eventually(reclaimed, 30)

    with agent_node(tmp_path, registry) as node:
        run_scenario(scenario(node))


def test_service_account_token_in_the_pod_authenticates(tmp_path: Path,
                                                        registry: LocalRegistry) -> None:
    """The admission plugin's kube-api-access volume, filled by the agent: a bound token
    the API server accepts as the pod's service account, the cluster CA, the namespace."""
    from kubi.apiserver.admission import TOKEN_MOUNT_PATH
    from kubi.controllers.base import ControllerOptions
    from kubi.controllers.manager import run_controllers

    async def scenario(node: AgentNode) -> None:
        async with api_server(tmp_path, service_accounts=True) as (api, client):
            ca = "-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n"
            options = ControllerOptions(extra={"root_ca_pem": ca})
            async with running(run_controllers(client, options,
                                               only={"serviceaccount",
                                                     "root-ca-cert-publisher"})):
                pod = busybox_pod("sa", ["sleep", "3600"])
                created = await client.create("pods", pod, "default")
                volume = created["spec"]["containers"][0]["volumeMounts"][0]["name"]
                assert volume.startswith("kube-api-access-")
                async with running(run_agent(client, node.config)):
                    async def started() -> Obj | None:
                        got = await get_pod(client, "sa")
                        return got if got["status"].get("phase") == "Running" else None

                    try:
                        got = await until(started, 60)
                    except AssertionError:
                        raise AssertionError(await events_of(client, "sa")) from None
                    cid = container_status(got, "main")["containerID"].split("://")[-1]
                    runtime = runtime_of(node)

                    async def read(name: str) -> str:
                        result = await runtime.exec_sync(
                            cid, ["cat", f"{TOKEN_MOUNT_PATH}/{name}"], 10)
                        assert result.exit_code == 0, result.stderr
                        return result.stdout.decode()

                    assert await read("namespace") == "default"
                    assert await read("ca.crt") == ca
                    token = await read("token")
                    as_pod = Client.in_process(api, token)
                    try:
                        review = await as_pod.create("selfsubjectreviews.authentication.k8s.io",
                                                     {"apiVersion": "authentication.k8s.io/v1",
                                                      "kind": "SelfSubjectReview"})
                    finally:
                        await as_pod.close()
                    user = review["status"]["userInfo"]
                    assert user["username"] == "system:serviceaccount:default:default"
                    assert "system:serviceaccounts:default" in user["groups"]
                    denied = await runtime.exec_sync(
                        cid, ["sh", "-c", f"echo x > {TOKEN_MOUNT_PATH}/token"], 10)
                    assert denied.exit_code != 0  # mounted read-only
                    await client.delete("pods", "sa", "default")
                    await eventually(lambda: gone(client, "sa"), 30)

    with agent_node(tmp_path, registry) as node:
        run_scenario(scenario(node))
