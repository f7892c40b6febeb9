"""config.json generation and the per-pod files: pure functions, no root needed."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from kubi.kubelet.runtime import (
    ContainerConfig,
    DNSConfig,
    InvalidArgumentError,
    Mount,
    MountPropagation,
    Resources,
    Security,
    bundle,
)


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\napp:x:1001:\nextra:x:2000:app\n")
    return tmp_path


SANDBOX = bundle.SandboxContext(
    hostname="pod-a", network_ns="/run/netns/pod-a", ipc_ns="/x/ns/ipc", uts_ns="/x/ns/uts",
    hosts_file="/x/hosts", resolv_file="/x/resolv.conf", hostname_file="/x/hostname")
ALL = set(bundle.ALL_CAPABILITIES)


def config(rootfs: Path, **extra: object) -> ContainerConfig:
    return ContainerConfig(name="c", rootfs=rootfs, **extra)  # type: ignore[arg-type]


def test_command_and_args_over_entrypoint_and_cmd(rootfs: Path) -> None:
    image = {"Entrypoint": ["/entry"], "Cmd": ["default"]}
    assert bundle.process_args(config(rootfs, image_config=image)) == ["/entry", "default"]
    assert bundle.process_args(config(rootfs, image_config=image, args=["a"])) == ["/entry", "a"]
    assert bundle.process_args(config(rootfs, image_config=image, command=["/bin/x"])) == [
        "/bin/x"]
    assert bundle.process_args(config(rootfs, image_config=image, command=["/bin/x"],
                                      args=["b"])) == ["/bin/x", "b"]
    with pytest.raises(InvalidArgumentError, match="no command"):
        bundle.process_args(config(rootfs))


def test_environment_merges_in_order(rootfs: Path) -> None:
    env = bundle.environment(config(rootfs, image_config={"Env": ["A=1", "PATH=/bin"]},
                                    env=[("A", "2"), ("B", "x=y")]), "host")
    assert env == ["HOSTNAME=host", "A=2", "PATH=/bin", "B=x=y"]
    assert "PATH=" + bundle.DEFAULT_PATH in bundle.environment(config(rootfs), "h")
    with pytest.raises(InvalidArgumentError):
        bundle.environment(config(rootfs, env=[("A=B", "1")]), "h")


def test_user_resolution(rootfs: Path) -> None:
    assert bundle.resolve_user(config(rootfs)) == (0, 0, [])
    assert bundle.resolve_user(config(rootfs, image_config={"User": "app"})) == (
        1000, 1001, [2000])
    assert bundle.resolve_user(config(rootfs, image_config={"User": "app:root"})) == (
        1000, 0, [2000])
    assert bundle.resolve_user(config(rootfs, image_config={"User": "app"},
                                      security=Security(run_as_user=5, run_as_group=6))) == (
        5, 6, [])
    assert bundle.resolve_user(config(rootfs, security=Security(run_as_user=1000))) == (
        1000, 1001, [2000])
    with pytest.raises(InvalidArgumentError, match="no such user"):
        bundle.resolve_user(config(rootfs, image_config={"User": "ghost"}))
    with pytest.raises(InvalidArgumentError, match="no such group"):
        bundle.resolve_user(config(rootfs, image_config={"User": "app:ghosts"}))
    with pytest.raises(InvalidArgumentError):
        bundle.resolve_user(config(rootfs, security=Security(run_as_user=-1)))


def test_capabilities() -> None:
    defaults = bundle.capabilities([], [], False, ALL)
    assert "CAP_CHOWN" in defaults and "CAP_NET_ADMIN" not in defaults
    changed = bundle.capabilities(["NET_ADMIN"], ["CAP_CHOWN"], False, ALL)
    assert "CAP_NET_ADMIN" in changed and "CAP_CHOWN" not in changed
    assert bundle.capabilities(["KILL"], ["ALL"], False, ALL) == ["CAP_KILL"]
    assert len(bundle.capabilities(["ALL"], [], False, ALL)) == len(ALL)
    # Nothing beyond what this host can grant (no CAP_SYS_RESOURCE here).
    assert "CAP_SYS_RESOURCE" not in bundle.capabilities([], [], True, ALL - {"SYS_RESOURCE"})
    with pytest.raises(InvalidArgumentError, match="unknown capability"):
        bundle.capabilities(["FLY"], [], False, ALL)


def test_build_spec(rootfs: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    spec = bundle.build_spec(config(
        rootfs, command=["sh"], working_dir="/work", tty=True,
        resources=Resources(cpu_shares=256, cpu_quota=50000, memory_limit=1 << 26),
        security=Security(read_only_root_filesystem=True),
        mounts=[Mount(str(data), "/dev/shm"),
                Mount(str(data), "/data/sub/", propagation=MountPropagation.HOST_TO_CONTAINER),
                Mount(str(data), "/data", readonly=True)]),
        SANDBOX, "/kubi/podx/c1", available_capabilities=ALL)
    linux = spec["linux"]
    assert linux["cgroupsPath"] == "/kubi/podx/c1"
    assert linux["namespaces"] == [
        {"type": "pid"}, {"type": "network", "path": "/run/netns/pod-a"},
        {"type": "ipc", "path": "/x/ns/ipc"}, {"type": "uts", "path": "/x/ns/uts"},
        {"type": "mount"}]
    assert linux["resources"]["memory"] == {"limit": 1 << 26}
    assert linux["resources"]["cpu"] == {"shares": 256, "quota": 50000, "period": 100000}
    assert linux["rootfsPropagation"] == "rslave"
    assert spec["root"] == {"path": str(rootfs), "readonly": True}
    process = spec["process"]
    assert process["cwd"] == "/work" and process["terminal"] is True
    assert "TERM=xterm" in process["env"]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert all(limit["hard"] <= hard for limit in process["rlimits"])
    by_destination = {m["destination"]: m for m in spec["mounts"]}
    assert by_destination["/dev/shm"]["source"] == str(data)  # replaces the default tmpfs
    assert by_destination["/etc/hosts"]["options"][-1] == "ro"  # read-only root
    destinations = [m["destination"] for m in spec["mounts"]]
    assert destinations.index("/data") < destinations.index("/data/sub")
    assert by_destination["/data"]["options"] == ["rbind", "rprivate", "ro"]


def test_build_spec_rejects_bad_input(rootfs: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="not a directory"):
        bundle.build_spec(config(rootfs / "missing", command=["x"]), SANDBOX, "/p")
    with pytest.raises(InvalidArgumentError, match="working directory"):
        bundle.build_spec(config(rootfs, command=["x"], working_dir="rel"), SANDBOX, "/p")
    with pytest.raises(InvalidArgumentError, match="negative"):
        bundle.build_spec(config(rootfs, command=["x"], resources=Resources(memory_limit=-1)),
                          SANDBOX, "/p")
    with pytest.raises(InvalidArgumentError, match="absolute"):
        bundle.build_spec(config(rootfs, command=["x"], mounts=[Mount("rel", "/d")]),
                          SANDBOX, "/p")


def test_host_network_and_shared_pid(rootfs: Path) -> None:
    sandbox = bundle.SandboxContext(hostname="node", network_ns=None, ipc_ns="/i",
                                    uts_ns=None, pid_ns="/proc/7/ns/pid")
    spec = bundle.build_spec(config(rootfs, command=["x"], security=Security(privileged=True)),
                             sandbox, "/p", available_capabilities=ALL)
    assert spec["linux"]["namespaces"] == [
        {"type": "pid", "path": "/proc/7/ns/pid"}, {"type": "ipc", "path": "/i"},
        {"type": "mount"}]
    assert "maskedPaths" not in spec["linux"]
    assert spec["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]


def test_pod_files(tmp_path: Path) -> None:
    hosts = bundle.hosts_content("web", "10.0.0.5", [("1.2.3.4", ["a", "b"])], False)
    assert hosts.startswith("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")
    assert "10.0.0.5\tweb\n" in hosts and hosts.endswith("1.2.3.4\ta\tb\n")
    host_file = tmp_path / "hosts"
    host_file.write_text("127.0.0.1 node\n")
    assert "127.0.0.1 node" in bundle.hosts_content("n", "", [], True, host_file)
    resolv = bundle.resolv_content(DNSConfig(["10.96.0.10"], ["default.svc.cluster.local"],
                                             ["ndots:5"]))
    assert resolv == ("search default.svc.cluster.local\nnameserver 10.96.0.10\n"
                      "options ndots:5\n")
    (tmp_path / "resolv").write_text("nameserver 1.1.1.1\n")
    assert bundle.resolv_content(DNSConfig(), tmp_path / "resolv") == "nameserver 1.1.1.1\n"
