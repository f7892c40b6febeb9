"""The agent's pure parts: $(VAR) expansion, service links, DNS, the atomic writer,
hostPath checks, downward API values, back-off, and local-path volumes."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from kubi.controllers.localpath import default_storage_class, volume_for
from kubi.kubelet.agent import derive_pod_cidr
from kubi.kubelet.pods import Backoff, dns_config, expand, service_env
from kubi.kubelet.volumes import (
    FileProjection,
    PodVolumes,
    VolumeError,
    check_host_path,
    container_mounts,
    field_ref_value,
    parse_quantity,
    resource_field_value,
    write_atomic,
)

POD = {"metadata": {"name": "web", "namespace": "shop", "uid": "u-1",
                    "labels": {"app": "web", "tier": "front"},
                    "annotations": {"note": 'say "hi"'}},
       "spec": {"nodeName": "node-1", "serviceAccountName": "sa",
                "containers": [{"name": "main", "resources": {
                    "limits": {"cpu": "500m", "memory": "128Mi"},
                    "requests": {"cpu": "250m"}}}]},
       "status": {"podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}], "hostIP": "192.0.2.1"}}


def test_expand_follows_upstream_rules() -> None:
    values = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", values.get) == "1-two"
    assert expand("$(MISSING) stays", values.get) == "$(MISSING) stays"
    assert expand("$$(A) escapes", values.get) == "$(A) escapes"
    assert expand("$A and $", values.get) == "$A and $"
    assert expand("open $(A", values.get) == "open $(A"
    assert expand("$()", values.get) == "$()"


def test_service_links_are_docker_style() -> None:
    services = [
        {"metadata": {"name": "my-db"}, "spec": {"clusterIP": "10.96.0.7", "ports": [
            {"name": "sql", "port": 5432, "protocol": "TCP"},
            {"port": 53, "protocol": "UDP"}]}},
        {"metadata": {"name": "headless"}, "spec": {"clusterIP": "None",
                                                    "ports": [{"port": 80}]}},
    ]
    env = dict(service_env(services))
    assert env["MY_DB_SERVICE_HOST"] == "10.96.0.7"
    assert env["MY_DB_SERVICE_PORT"] == "5432"
    assert env["MY_DB_SERVICE_PORT_SQL"] == "5432"
    assert env["MY_DB_PORT"] == "tcp://10.96.0.7:5432"
    assert env["MY_DB_PORT_53_UDP"] == "udp://10.96.0.7:53"
    assert env["MY_DB_PORT_53_UDP_PROTO"] == "udp"
    assert env["MY_DB_PORT_5432_TCP_ADDR"] == "10.96.0.7"
    assert not any(key.startswith("HEADLESS") for key in env)


def test_dns_policies() -> None:
    cluster = dns_config(POD, ["10.96.0.10"], "cluster.local")
    assert cluster.servers == ["10.96.0.10"]
    assert cluster.searches == ["shop.svc.cluster.local", "svc.cluster.local",
                                "cluster.local"]
    assert cluster.options == ["ndots:5"]
    host = dns_config({**POD, "spec": {"hostNetwork": True}}, ["10.96.0.10"], "cluster.local")
    assert (host.servers, host.searches) == ([], [])  # Default: the node's resolv.conf
    custom = dns_config({**POD, "spec": {"dnsPolicy": "None", "dnsConfig": {
        "nameservers": ["1.2.3.4"], "searches": ["example"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}},
        ["10.96.0.10"], "cluster.local")
    assert custom.servers == ["1.2.3.4"] and custom.searches == ["example"]
    assert custom.options == ["ndots:2", "edns0"]
    merged = dns_config({**POD, "spec": {"dnsConfig": {"options": [
        {"name": "ndots", "value": "1"}]}}}, ["10.96.0.10"], "cluster.local")
    assert merged.options == ["ndots:1"] and merged.servers == ["10.96.0.10"]


def test_atomic_writer_swaps_data_and_prunes(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    assert write_atomic(target, {"a": FileProjection(b"1"), "dir/b": FileProjection(b"2", 0o600)})
    first = os.readlink(target / "..data")
    assert (target / "a").read_text() == "1" and os.readlink(target / "a") == "..data/a"
    assert (target / "dir" / "b").stat().st_mode & 0o777 == 0o600
    assert not write_atomic(target, {"a": FileProjection(b"1"),
                                     "dir/b": FileProjection(b"2", 0o600)})
    time.sleep(0.001)
    assert write_atomic(target, {"a": FileProjection(b"changed")})
    assert os.readlink(target / "..data") != first
    assert (target / "a").read_text() == "changed"
    assert not (target / "dir").exists()
    assert sorted(p.name for p in target.iterdir() if not p.name.startswith("..")) == ["a"]
    assert len([p for p in target.iterdir() if p.name.startswith("..") and p.is_dir()
                and not p.is_symlink()]) == 1
    for bad in ("../escape", "/abs", "..hidden"):
        with pytest.raises(VolumeError):
            write_atomic(target, {bad: FileProjection(b"x")})
    assert (target / "a").read_text() == "changed"


def test_host_path_types(tmp_path: Path) -> None:
    created = check_host_path(str(tmp_path / "new" / "dir"), "DirectoryOrCreate")
    assert created.is_dir()
    assert check_host_path(str(tmp_path / "f"), "FileOrCreate").is_file()
    with pytest.raises(VolumeError, match="is not a directory"):
        check_host_path(str(tmp_path / "f"), "Directory")
    with pytest.raises(VolumeError, match="is not a file"):
        check_host_path(str(tmp_path), "File")
    with pytest.raises(VolumeError, match="is not a socket file"):
        check_host_path(str(tmp_path / "f"), "Socket")
    with pytest.raises(VolumeError, match="is not a directory"):
        check_host_path(str(tmp_path / "f"), "DirectoryOrCreate")
    with pytest.raises(VolumeError, match="must be an absolute path"):
        check_host_path("relative", "")
    with pytest.raises(VolumeError, match="invalid hostPath type"):
        check_host_path(str(tmp_path), "Bogus")
    sock_path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        assert check_host_path(str(sock_path), "Socket") == sock_path
    assert not (tmp_path / "missing").exists()
    with pytest.raises(VolumeError):
        check_host_path(str(tmp_path / "missing"), "File")
    assert not (tmp_path / "missing").exists()


def test_downward_api_values() -> None:
    assert field_ref_value(POD, "metadata.name") == "web"
    assert field_ref_value(POD, "metadata.labels") == 'app="web"\ntier="front"'
    assert field_ref_value(POD, "metadata.annotations['note']") == 'say "hi"'
    assert field_ref_value(POD, "metadata.annotations") == 'note="say \\"hi\\""'
    assert field_ref_value(POD, "status.podIPs") == "10.0.0.5"
    assert field_ref_value(POD, "spec.serviceAccountName") == "sa"
    with pytest.raises(ValueError, match="unsupported fieldPath"):
        field_ref_value(POD, "spec.containers")
    node = {"cpu": "4", "memory": "8Gi"}
    assert resource_field_value(POD, "main", {"resource": "limits.cpu"}, node) == "1"
    assert resource_field_value(POD, "main", {"resource": "limits.cpu", "divisor": "1m"},
                                node) == "500"
    assert resource_field_value(POD, "main", {"resource": "requests.cpu", "divisor": "1m"},
                                node) == "250"
    assert resource_field_value(POD, "main", {"resource": "limits.memory", "divisor": "1Mi"},
                                node) == "128"
    assert resource_field_value(POD, "main", {"resource": "limits.ephemeral-storage"},
                                {"ephemeral-storage": "10Gi"}) == str(10 * 2**30)
    with pytest.raises(ValueError, match="unsupported container resource"):
        resource_field_value(POD, "main", {"resource": "limits.gpu"}, node)
    with pytest.raises(ValueError, match="not found"):
        resource_field_value(POD, "other", {"resource": "limits.cpu"}, node)
    assert parse_quantity("1.5Gi") == 3 * 2**29
    with pytest.raises(ValueError):
        parse_quantity("lots")


def test_container_mounts_resolve_sub_paths(tmp_path: Path) -> None:
    volumes = PodVolumes({"data": tmp_path / "data", "cfg": tmp_path / "cfg"}, {"cfg"})
    (tmp_path / "cfg").mkdir()
    container = {"name": "c", "volumeMounts": [
        {"name": "data", "mountPath": "/d", "subPath": "sub/dir"},
        {"name": "cfg", "mountPath": "/c"}]}
    mounts = container_mounts(container, volumes)
    assert mounts[0].host_path == str((tmp_path / "data" / "sub" / "dir").resolve())
    assert mounts[0].readonly is False and mounts[1].readonly is True
    with pytest.raises(VolumeError, match="invalid subPath"):
        container_mounts({"name": "c", "volumeMounts": [
            {"name": "data", "mountPath": "/d", "subPath": "../x"}]}, volumes)
    with pytest.raises(VolumeError, match='volume "nope"'):
        container_mounts({"name": "c", "volumeMounts": [{"name": "nope", "mountPath": "/n"}]},
                         volumes)


def test_backoff_doubles_to_the_cap() -> None:
    backoff = Backoff(10, 40)
    assert backoff.remaining("k", time.time()) == 0  # the first restart is immediate
    delays = []
    for _ in range(4):
        backoff.next("k")
        delays.append(backoff.current("k"))
    assert delays == [10, 20, 40, 40]
    assert 39 < backoff.remaining("k", time.time()) <= 40
    assert backoff.remaining("k", time.time() - 100) == 0
    backoff.reset("k")
    assert backoff.current("k") == 0


def test_local_path_volume_and_pod_cidr() -> None:
    claim = {"metadata": {"name": "data", "namespace": "db", "uid": "c-1",
                          "resourceVersion": "7"},
             "spec": {"accessModes": ["ReadWriteOnce"],
                      "resources": {"requests": {"storage": "2Gi"}}}}
    volume = volume_for(claim, default_storage_class(), "node-a", Path("/var/lib/kubi/storage"))
    assert volume["metadata"]["name"] == "pvc-c-1"
    spec = volume["spec"]
    assert spec["hostPath"] == {"path": "/var/lib/kubi/storage/c-1_db_data",
                                "type": "DirectoryOrCreate"}
    assert spec["persistentVolumeReclaimPolicy"] == "Delete"
    assert spec["capacity"] == {"storage": "2Gi"}
    assert spec["claimRef"]["uid"] == "c-1"
    assert default_storage_class()["volumeBindingMode"] == "WaitForFirstConsumer"
    assert derive_pod_cidr("node-a", "10.244.0.0/16") == derive_pod_cidr("node-a",
                                                                          "10.244.0.0/16")
    assert derive_pod_cidr("node-a", "10.244.0.0/16").endswith("/24")
