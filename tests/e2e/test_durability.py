"""The store under a real server: no acknowledged write lost to kill -9; bounded under churn."""

from __future__ import annotations

import os
import signal
import ssl
import threading
import time
from pathlib import Path

import httpx
import orjson

from tests.cluster import Cluster, start_cluster

JSON = {"content-type": "application/json"}


def _client(cluster: Cluster) -> httpx.Client:
    return httpx.Client(base_url=cluster.url,
                        verify=ssl.create_default_context(cafile=cluster.ca),
                        headers={"Authorization": f"Bearer {cluster.token}"}, timeout=10)


def test_kill_9_loses_no_acknowledged_write(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path)
    acked: dict[str, int] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(worker: int) -> None:
        with _client(cluster) as client:
            i = 0
            while not stop.is_set():
                name = f"w{worker}-{i}"
                try:
                    r = client.post("/api/v1/namespaces/default/configmaps", headers=JSON,
                                    content=orjson.dumps({
                                        "apiVersion": "v1", "kind": "ConfigMap",
                                        "metadata": {"name": name}, "data": {"i": str(i)}}))
                except httpx.HTTPError:
                    return  # the server is gone: this write was never acknowledged
                if r.status_code == 201:
                    with lock:
                        acked[name] = int(r.json()["metadata"]["resourceVersion"])
                i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    while len(acked) < 300:
        time.sleep(0.01)
    os.killpg(cluster.process.pid, signal.SIGKILL)
    cluster.process.wait()
    stop.set()
    for t in threads:
        t.join()

    restarted = start_cluster(tmp_path, port=cluster.port)
    try:
        with _client(restarted) as client:
            items = client.get("/api/v1/namespaces/default/configmaps").json()["items"]
        stored = {i["metadata"]["name"]: int(i["metadata"]["resourceVersion"]) for i in items}
        missing = [name for name in acked if name not in stored]
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
        assert all(stored[name] == rv for name, rv in acked.items())
        by_ack = sorted(acked, key=acked.__getitem__)
        assert by_ack == sorted(acked, key=stored.__getitem__)
    finally:
        restarted.stop()


def _db_bytes(data_dir: Path) -> int:
    return sum(f.stat().st_size for f in (data_dir / "db").glob("state.db*"))


def test_lease_churn_keeps_the_store_bounded(tmp_path: Path) -> None:
    seconds = float(os.environ.get("KUBI_CHURN_SECONDS", "150"))
    cluster = start_cluster(tmp_path, "--compact-interval", "2")
    leases = 1000
    try:
        with _client(cluster) as client:
            for i in range(leases):
                r = client.post("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                                headers=JSON, content=orjson.dumps({
                                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                    "metadata": {"name": f"node-{i}"},
                                    "spec": {"holderIdentity": f"node-{i}",
                                             "leaseDurationSeconds": 40}}))
                assert r.status_code == 201, r.text
            first_rv = client.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/"
                                  "leases/node-0").json()["metadata"]["resourceVersion"]
        errors: list[str] = []
        renewals = [0]
        deadline = time.monotonic() + seconds

        def renew(worker: int) -> None:
            with _client(cluster) as client:
                n = worker
                while time.monotonic() < deadline:
                    name = f"node-{n % leases}"
                    r = client.patch(
                        f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}",
                        headers={"content-type": "application/merge-patch+json"},
                        content=orjson.dumps({"spec": {
                            "renewTime": f"2026-01-01T00:00:{n % 60:02d}.000000Z"}}))
                    if r.status_code != 200:
                        errors.append(r.text)
                        return
                    renewals[0] += 1
                    n += 4

        peak = [0]

        def sample() -> None:
            while time.monotonic() < deadline:
                peak[0] = max(peak[0], _db_bytes(tmp_path))
                time.sleep(1)

        threads = [threading.Thread(target=renew, args=(w,)) for w in range(4)]
        threads.append(threading.Thread(target=sample))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        assert renewals[0] > leases * 5  # every lease renewed many times over
        time.sleep(5)  # one more compaction after the churn stops
        final = _db_bytes(tmp_path)
        assert peak[0] < 64 * 1024 * 1024, f"store grew to {peak[0]} bytes under churn"
        assert final < 32 * 1024 * 1024, f"store is {final} bytes after compaction"
        # Compaction really ran: a watch from before the churn is told the version is gone.
        with _client(cluster) as client, client.stream(
                "GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                params={"watch": "true", "resourceVersion": first_rv}) as stream:
            for line in stream.iter_lines():
                event = orjson.loads(line)
                assert event["type"] == "ERROR"
                assert event["object"]["code"] == 410
                break
    finally:
        cluster.stop()
