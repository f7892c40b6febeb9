"""Server-side Table rendering: upstream's columns and cells for every kind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubi.api.errors import StatusError
from kubi.api.resources import RESOURCES
from kubi.apiserver.tables import column_definitions, human_duration, row, table

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def ago(**kw: float) -> str:
    return (NOW - timedelta(**kw)).strftime("%Y-%m-%dT%H:%M:%SZ")


def meta(name: str = "x", **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": "default", "creationTimestamp": ago(minutes=5),
            "resourceVersion": "7", **extra}


def cells(resource: str, group: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The row as {column name: cell}."""
    names = [c["name"] for c in column_definitions(resource, group)]
    values = row(resource, group, obj, now=NOW)["cells"]
    assert len(values) == len(names)
    return dict(zip(names, values, strict=True))


# -- ages -----------------------------------------------------------------------------


@pytest.mark.parametrize(("delta", "text"), [
    (timedelta(seconds=-5), "<invalid>"),
    (timedelta(seconds=-1), "0s"),
    (timedelta(seconds=0), "0s"),
    (timedelta(seconds=5), "5s"),
    (timedelta(seconds=119), "119s"),
    (timedelta(seconds=120), "2m"),
    (timedelta(seconds=200), "3m20s"),
    (timedelta(minutes=10, seconds=30), "10m"),
    (timedelta(minutes=179), "179m"),
    (timedelta(hours=3), "3h"),
    (timedelta(hours=3, minutes=7), "3h7m"),
    (timedelta(hours=8, minutes=7), "8h"),
    (timedelta(hours=47), "47h"),
    (timedelta(days=2, hours=3), "2d3h"),
    (timedelta(days=7), "7d"),
    (timedelta(days=8, hours=5), "8d"),
    (timedelta(days=729), "729d"),
    (timedelta(days=730), "2y"),
    (timedelta(days=800), "2y70d"),
    (timedelta(days=365 * 9), "9y"),
])
def test_human_duration(delta: timedelta, text: str) -> None:
    assert human_duration(delta) == text


def test_age_unknown_and_naive_now() -> None:
    assert cells("configmaps", "", {"metadata": {"name": "c"}})["Age"] == "<unknown>"
    naive = NOW.replace(tzinfo=None)
    got = row("configmaps", "", {"metadata": meta()}, now=naive)["cells"]
    assert got[2] == "5m"


# -- every kind, realistic and minimal --------------------------------------------------


@pytest.mark.parametrize("info", RESOURCES, ids=lambda r: f"{r.group or 'core'}/{r.version}/"
                                                          f"{r.plural}")
def test_every_kind_renders_minimal_objects(info: Any) -> None:
    minimal: list[dict[str, Any]] = [{}, {"metadata": {}}, {"metadata": {"name": "n"},
                                                            "spec": None, "status": "junk"}]
    for obj in minimal:
        t = table(info.plural, info.group, [obj], now=NOW)
        assert len(t["rows"][0]["cells"]) == len(t["columnDefinitions"])
        for column in t["columnDefinitions"]:
            assert set(column) == {"name", "type", "format", "description", "priority"}
            assert column["priority"] in (0, 1)
            assert column["description"]


def test_default_convertor_for_kinds_without_printer() -> None:
    defs = column_definitions("roles", "rbac.authorization.k8s.io")
    assert [(c["name"], c["type"], c["format"]) for c in defs] == [
        ("Name", "string", "name"), ("Created At", "date", "")]
    assert cells("roles", "rbac.authorization.k8s.io", {"metadata": meta("r")}) == {
        "Name": "r", "Created At": "2024-05-01T11:55:00Z"}
    assert cells("limitranges", "", {})["Created At"] == "0001-01-01T00:00:00Z"
    assert cells("widgets", "example.com", {"metadata": {"name": "w"}})["Name"] == "w"


def test_wide_columns_have_priority_one() -> None:
    def wide(resource: str, group: str = "") -> list[str]:
        return [c["name"] for c in column_definitions(resource, group) if c["priority"] == 1]

    assert wide("pods") == ["IP", "Node", "Nominated Node", "Readiness Gates"]
    assert wide("deployments", "apps") == ["Containers", "Images", "Selector"]
    assert wide("services") == ["Selector"]
    assert wide("nodes") == ["Internal-IP", "External-IP", "OS-Image", "Kernel-Version",
                             "Container-Runtime"]
    assert wide("events") == ["Subobject", "Source", "First Seen", "Count", "Name"]
    assert wide("configmaps") == []


# -- pods -------------------------------------------------------------------------------


def pod(status: dict[str, Any], spec: dict[str, Any] | None = None,
        **metadata: Any) -> dict[str, Any]:
    return {"metadata": meta("p", **metadata),
            "spec": spec or {"containers": [{"name": "app", "image": "nginx"}]},
            "status": status}


def running(name: str = "app", restarts: int = 0, **extra: Any) -> dict[str, Any]:
    return {"name": name, "ready": True, "restartCount": restarts,
            "state": {"running": {"startedAt": ago(minutes=4)}}, **extra}


def test_pod_running_and_wide_cells() -> None:
    obj = pod({"phase": "Running", "podIPs": [{"ip": "10.1.0.4"}], "podIP": "10.1.0.4",
               "containerStatuses": [running()]},
              {"containers": [{"name": "app"}], "nodeName": "node-1"})
    assert cells("pods", "", obj) == {
        "Name": "p", "Ready": "1/1", "Status": "Running", "Restarts": "0", "Age": "5m",
        "IP": "10.1.0.4", "Node": "node-1", "Nominated Node": "<none>",
        "Readiness Gates": "<none>"}


def test_pod_minimal_is_pending_zero_of_zero() -> None:
    got = cells("pods", "", {"metadata": {"name": "p"}})
    assert (got["Ready"], got["Status"], got["Restarts"], got["IP"]) == ("0/0", "", "0", "<none>")
    got = cells("pods", "", pod({"phase": "Pending"}))
    assert (got["Ready"], got["Status"]) == ("0/1", "Pending")


def test_pod_restarts_with_last_restart_age() -> None:
    status = running(restarts=2, lastState={"terminated": {"finishedAt": ago(minutes=5),
                                                           "exitCode": 1}})
    got = cells("pods", "", pod({"phase": "Running", "containerStatuses": [status]}))
    assert got["Restarts"] == "2 (5m ago)"
    # Restarts without a recorded termination print the bare count.
    got = cells("pods", "", pod({"phase": "Running", "containerStatuses": [running(restarts=3)]}))
    assert got["Restarts"] == "3"


def test_pod_crash_loop_and_waiting_reasons() -> None:
    waiting = {"name": "app", "ready": False, "restartCount": 4,
               "state": {"waiting": {"reason": "CrashLoopBackOff"}},
               "lastState": {"terminated": {"finishedAt": ago(seconds=30), "exitCode": 1}}}
    got = cells("pods", "", pod({"phase": "Running", "containerStatuses": [waiting]}))
    assert (got["Ready"], got["Status"], got["Restarts"]) == ("0/1", "CrashLoopBackOff",
                                                              "4 (30s ago)")
    pulling = {"name": "app", "state": {"waiting": {"reason": "ImagePullBackOff"}}}
    assert cells("pods", "", pod({"phase": "Pending", "containerStatuses": [pulling]}))[
        "Status"] == "ImagePullBackOff"


def test_pod_terminated_reasons() -> None:
    done = {"name": "app", "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}
    row_ = row("pods", "", pod({"phase": "Succeeded", "containerStatuses": [done]}), now=NOW)
    assert row_["cells"][2] == "Completed"
    assert row_["conditions"] == [{"type": "Completed", "status": "True", "reason": "Succeeded",
                                   "message": "The pod has completed successfully."}]
    failed = {"name": "app", "state": {"terminated": {"exitCode": 137, "signal": 9}}}
    row_ = row("pods", "", pod({"phase": "Failed", "containerStatuses": [failed]}), now=NOW)
    assert row_["cells"][2] == "Signal:9"
    assert row_["conditions"][0]["reason"] == "Failed"
    code = {"name": "app", "state": {"terminated": {"exitCode": 3}}}
    assert cells("pods", "", pod({"phase": "Failed", "containerStatuses": [code]}))[
        "Status"] == "ExitCode:3"
    assert "conditions" not in row("pods", "", pod({"phase": "Running"}), now=NOW)


def test_pod_completed_but_sibling_running() -> None:
    spec = {"containers": [{"name": "a"}, {"name": "b"}]}
    statuses = [running("a"), {"name": "b", "state": {"terminated": {"reason": "Completed"}}}]
    ready_cond = [{"type": "Ready", "status": "True"}]
    got = cells("pods", "", pod({"phase": "Running", "containerStatuses": statuses,
                                 "conditions": ready_cond}, spec))
    assert (got["Ready"], got["Status"]) == ("1/2", "Running")
    got = cells("pods", "", pod({"phase": "Running", "containerStatuses": statuses}, spec))
    assert got["Status"] == "NotReady"


def test_pod_init_containers() -> None:
    spec = {"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "app"}]}
    done = {"name": "i1", "state": {"terminated": {"exitCode": 0}}}
    running_init = {"name": "i2", "state": {"running": {}}}
    got = cells("pods", "", pod({"phase": "Pending",
                                 "initContainerStatuses": [done, running_init]}, spec))
    assert (got["Ready"], got["Status"]) == ("0/1", "Init:1/2")
    crash = {"name": "i1", "restartCount": 2,
             "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
    got = cells("pods", "", pod({"phase": "Pending", "initContainerStatuses": [crash]}, spec))
    assert (got["Status"], got["Restarts"]) == ("Init:CrashLoopBackOff", "2")
    failed = {"name": "i1", "state": {"terminated": {"exitCode": 2}}}
    assert cells("pods", "", pod({"phase": "Pending", "initContainerStatuses": [failed]},
                                 spec))["Status"] == "Init:ExitCode:2"
    killed = {"name": "i1", "state": {"terminated": {"exitCode": 1, "signal": 15}}}
    assert cells("pods", "", pod({"phase": "Pending", "initContainerStatuses": [killed]},
                                 spec))["Status"] == "Init:Signal:15"
    oom = {"name": "i1", "state": {"terminated": {"exitCode": 1, "reason": "OOMKilled"}}}
    assert cells("pods", "", pod({"phase": "Pending", "initContainerStatuses": [oom]},
                                 spec))["Status"] == "Init:OOMKilled"
    initializing = {"name": "i1", "state": {"waiting": {"reason": "PodInitializing"}}}
    assert cells("pods", "", pod({"phase": "Pending", "initContainerStatuses": [initializing]},
                                 spec))["Status"] == "Init:0/2"


def test_pod_sidecar_counts_towards_ready() -> None:
    spec = {"initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
            "containers": [{"name": "app"}]}
    sidecar = {"name": "proxy", "started": True, "ready": True, "restartCount": 1,
               "state": {"running": {}}}
    got = cells("pods", "", pod({"phase": "Running", "initContainerStatuses": [sidecar],
                                 "containerStatuses": [running()],
                                 "conditions": [{"type": "Initialized", "status": "True"}]},
                                spec))
    assert (got["Ready"], got["Status"], got["Restarts"]) == ("2/2", "Running", "1")


def test_pod_terminating_unknown_and_gated() -> None:
    deleting = pod({"phase": "Running", "containerStatuses": [running()]},
                   deletionTimestamp=ago(seconds=3))
    assert cells("pods", "", deleting)["Status"] == "Terminating"
    lost = pod({"phase": "Running", "reason": "NodeLost"}, deletionTimestamp=ago(seconds=3))
    assert cells("pods", "", lost)["Status"] == "Unknown"
    # A finished pod being deleted keeps its final status.
    done = pod({"phase": "Succeeded"}, deletionTimestamp=ago(seconds=3))
    assert cells("pods", "", done)["Status"] == "Succeeded"
    gated = pod({"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]})
    assert cells("pods", "", gated)["Status"] == "SchedulingGated"
    evicted = pod({"phase": "Failed", "reason": "Evicted"})
    assert cells("pods", "", evicted)["Status"] == "Evicted"


def test_pod_readiness_gates_and_nominated_node() -> None:
    spec = {"containers": [{"name": "app"}],
            "readinessGates": [{"conditionType": "a"}, {"conditionType": "b"}]}
    obj = pod({"phase": "Running", "nominatedNodeName": "n2",
               "conditions": [{"type": "a", "status": "True"}, {"type": "b", "status": "False"}]},
              spec)
    got = cells("pods", "", obj)
    assert (got["Readiness Gates"], got["Nominated Node"]) == ("1/2", "n2")


# -- workloads ---------------------------------------------------------------------------

TEMPLATE = {"spec": {"containers": [{"name": "web", "image": "nginx:1"},
                                    {"name": "log", "image": "busybox"}]}}


def test_deployment() -> None:
    obj = {"metadata": meta("web"),
           "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                    "template": TEMPLATE},
           "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    assert cells("deployments", "apps", obj) == {
        "Name": "web", "Ready": "2/3", "Up-to-date": 3, "Available": 2, "Age": "5m",
        "Containers": "web,log", "Images": "nginx:1,busybox", "Selector": "app=web"}
    assert cells("deployments", "apps", {})["Ready"] == "0/0"
    assert cells("deployments", "apps", {})["Selector"] == ""


def test_replicaset_and_rc() -> None:
    rs = {"metadata": meta("web-1"), "spec": {"replicas": 2, "template": TEMPLATE, "selector": {
        "matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}},
          "status": {"replicas": 2, "readyReplicas": 1}}
    got = cells("replicasets", "apps", rs)
    assert (got["Desired"], got["Current"], got["Ready"], got["Selector"]) == (
        2, 2, 1, "app in (web)")
    assert cells("replicasets", "apps", {})["Selector"] == "<none>"
    rc = {"metadata": meta("rc"), "spec": {"replicas": 1, "selector": {"app": "x"}}}
    got = cells("replicationcontrollers", "", rc)
    assert (got["Desired"], got["Containers"], got["Selector"]) == (1, "", "app=x")


def test_statefulset_daemonset() -> None:
    sts = {"metadata": meta("db"), "spec": {"replicas": 3, "template": TEMPLATE},
           "status": {"readyReplicas": 3}}
    assert cells("statefulsets", "apps", sts) == {
        "Name": "db", "Ready": "3/3", "Age": "5m", "Containers": "web,log",
        "Images": "nginx:1,busybox"}
    ds = {"metadata": meta("agent"),
          "spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                         "containers": [{"name": "a", "image": "a:1"}]}},
                   "selector": {"matchLabels": {"app": "agent"}}},
          "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1,
                     "updatedNumberScheduled": 2, "numberAvailable": 1}}
    got = cells("daemonsets", "apps", ds)
    assert (got["Desired"], got["Ready"], got["Node Selector"], got["Selector"]) == (
        2, 1, "kubernetes.io/os=linux", "app=agent")
    assert cells("daemonsets", "apps", {})["Node Selector"] == "<none>"


def test_jobs() -> None:
    complete = {"metadata": meta("j"), "spec": {"completions": 3, "template": TEMPLATE},
                "status": {"succeeded": 3, "startTime": ago(minutes=5),
                           "completionTime": ago(minutes=2),
                           "conditions": [{"type": "Complete", "status": "True"}]}}
    got = cells("jobs", "batch", complete)
    assert (got["Status"], got["Completions"], got["Duration"]) == ("Complete", "3/3", "3m")
    running_job = {"spec": {"parallelism": 2}, "status": {"startTime": ago(seconds=40)}}
    got = cells("jobs", "batch", running_job)
    assert (got["Status"], got["Completions"], got["Duration"]) == ("Running", "0/1 of 2", "40s")
    assert cells("jobs", "batch", {})["Completions"] == "0/1"
    assert cells("jobs", "batch", {})["Duration"] == ""
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    assert cells("jobs", "batch", failed)["Status"] == "Failed"
    suspended = {"status": {"conditions": [{"type": "Suspended", "status": "True"}]}}
    assert cells("jobs", "batch", suspended)["Status"] == "Suspended"
    deleting = {"metadata": {"deletionTimestamp": ago(seconds=1)}}
    assert cells("jobs", "batch", deleting)["Status"] == "Terminating"


def test_cronjob() -> None:
    obj = {"metadata": meta("cj"),
           "spec": {"schedule": "*/5 * * * *", "suspend": False,
                    "jobTemplate": {"spec": {"template": TEMPLATE}}},
           "status": {"active": [{"name": "cj-1"}], "lastScheduleTime": ago(minutes=3)}}
    got = cells("cronjobs", "batch", obj)
    assert (got["Schedule"], got["Timezone"], got["Suspend"], got["Active"],
            got["Last Schedule"]) == ("*/5 * * * *", "<none>", "False", 1, "3m")
    got = cells("cronjobs", "batch", {})
    assert (got["Suspend"], got["Last Schedule"], got["Selector"]) == ("<unset>", "<none>",
                                                                       "<none>")


# -- services and networking -----------------------------------------------------------


def svc(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": meta("s"), "spec": spec, "status": status or {}}


def test_service_cluster_ip() -> None:
    got = cells("services", "", svc({"type": "ClusterIP", "clusterIP": "10.96.0.10",
                                     "clusterIPs": ["10.96.0.10"], "selector": {"app": "echo"},
                                     "ports": [{"port": 80, "protocol": "TCP"},
                                               {"port": 53, "protocol": "UDP"}]}))
    assert got == {"Name": "s", "Type": "ClusterIP", "Cluster-IP": "10.96.0.10",
                   "External-IP": "<none>", "Port(s)": "80/TCP,53/UDP", "Age": "5m",
                   "Selector": "app=echo"}


def test_service_node_port_and_external_ips() -> None:
    got = cells("services", "", svc({"type": "NodePort", "clusterIPs": ["10.96.1.1"],
                                     "externalIPs": ["1.2.3.4"],
                                     "ports": [{"port": 80, "nodePort": 30080,
                                                "protocol": "TCP"}]}))
    assert (got["External-IP"], got["Port(s)"], got["Selector"]) == (
        "1.2.3.4", "80:30080/TCP", "<none>")


def test_service_load_balancer() -> None:
    spec = {"type": "LoadBalancer", "clusterIPs": ["10.96.1.2"],
            "ports": [{"port": 443, "nodePort": 31443, "protocol": "TCP"}]}
    assert cells("services", "", svc(spec))["External-IP"] == "<pending>"
    status = {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"},
                                           {"hostname": "lb.example.com"}]}}
    # Servers render wide; kubectl does not clip long addresses from a server table.
    assert cells("services", "", svc(spec, status))["External-IP"] == \
        "203.0.113.9,lb.example.com"
    with_external = dict(spec, externalIPs=["198.51.100.1"])
    assert cells("services", "", svc(with_external, status))["External-IP"] == \
        "203.0.113.9,lb.example.com,198.51.100.1"


def test_service_external_name_headless_and_minimal() -> None:
    got = cells("services", "", svc({"type": "ExternalName", "externalName": "db.example.com"}))
    assert (got["Cluster-IP"], got["External-IP"], got["Port(s)"]) == (
        "<none>", "db.example.com", "<none>")
    got = cells("services", "", svc({"type": "ClusterIP", "clusterIP": "None"}))
    assert got["Cluster-IP"] == "None"
    assert cells("services", "", {})["External-IP"] == "<unknown>"


def test_ingress_and_class() -> None:
    obj = {"metadata": meta("ing"),
           "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["a.example"]}],
                    "rules": [{"host": h} for h in ("a.example", "b.example", "c.example",
                                                    "d.example", "e.example")]},
           "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}}
    assert cells("ingresses", "networking.k8s.io", obj) == {
        "Name": "ing", "Class": "nginx", "Hosts": "a.example,b.example,c.example + 2 more...",
        "Address": "192.0.2.1", "Ports": "80, 443", "Age": "5m"}
    got = cells("ingresses", "networking.k8s.io", {"spec": {"rules": [{}]}})
    assert (got["Class"], got["Hosts"], got["Address"], got["Ports"]) == ("<none>", "*", "", "80")
    cls = {"metadata": meta("nginx"), "spec": {"controller": "k8s.io/ingress-nginx",
                                               "parameters": {"apiGroup": "k8s.example.com",
                                                              "kind": "Params", "name": "p"}}}
    got = cells("ingressclasses", "networking.k8s.io", cls)
    assert (got["Controller"], got["Parameters"]) == ("k8s.io/ingress-nginx",
                                                      "Params.k8s.example.com/p")
    assert cells("ingressclasses", "networking.k8s.io", {})["Parameters"] == "<none>"


def test_endpoints_and_slices() -> None:
    ep = {"metadata": meta("web"), "subsets": [{
        "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::3"}],
        "ports": [{"port": 80}, {"port": 443}]}]}
    assert cells("endpoints", "", ep)["Endpoints"] == \
        "10.0.0.1:80,10.0.0.2:80,[fd00::3]:80 + 3 more..."
    headless = {"subsets": [{"addresses": [{"ip": "10.0.0.9"}]}]}
    assert cells("endpoints", "", headless)["Endpoints"] == "10.0.0.9"
    assert cells("endpoints", "", {})["Endpoints"] == "<none>"
    eps = {"metadata": meta("web-abc"), "addressType": "IPv4",
           "ports": [{"port": 80, "name": "http"}, {"name": "named"}, {}],
           "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]}
    got = cells("endpointslices", "discovery.k8s.io", eps)
    assert (got["AddressType"], got["Ports"], got["Endpoints"]) == (
        "IPv4", "80,named,*", "10.0.0.1,10.0.0.2")
    got = cells("endpointslices", "discovery.k8s.io", {})
    assert (got["Ports"], got["Endpoints"]) == ("<unset>", "<unset>")


def test_network_policy() -> None:
    assert cells("networkpolicies", "networking.k8s.io",
                 {"spec": {"podSelector": {}}})["Pod-Selector"] == "<none>"
    got = cells("networkpolicies", "networking.k8s.io",
                {"spec": {"podSelector": {"matchLabels": {"role": "db"}}}})
    assert got["Pod-Selector"] == "role=db"


# -- cluster, config, storage ----------------------------------------------------------


def test_nodes() -> None:
    obj = {"metadata": meta("n1", labels={"node-role.kubernetes.io/control-plane": "",
                                          "node-role.kubernetes.io/worker": "",
                                          "kubernetes.io/role": "edge"}),
           "spec": {"unschedulable": True},
           "status": {"conditions": [{"type": "MemoryPressure", "status": "False"},
                                     {"type": "Ready", "status": "True"}],
                      "addresses": [{"type": "InternalIP", "address": "172.18.0.2"},
                                    {"type": "Hostname", "address": "n1"}],
                      "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian",
                                   "kernelVersion": "6.1", "containerRuntimeVersion": "kubi://1"}}}
    assert cells("nodes", "", obj) == {
        "Name": "n1", "Status": "Ready,SchedulingDisabled", "Roles": "control-plane,edge,worker",
        "Age": "5m", "Version": "v1.32.0", "Internal-IP": "172.18.0.2", "External-IP": "<none>",
        "OS-Image": "Debian", "Kernel-Version": "6.1", "Container-Runtime": "kubi://1"}
    got = cells("nodes", "", {"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}})
    assert (got["Status"], got["Roles"], got["OS-Image"]) == ("NotReady", "<none>", "<unknown>")
    assert cells("nodes", "", {})["Status"] == "Unknown"


def test_namespaces_configmaps_secrets_serviceaccounts() -> None:
    assert cells("namespaces", "", {"metadata": meta("kube-system"),
                                    "status": {"phase": "Active"}})["Status"] == "Active"
    assert cells("configmaps", "", {"data": {"a": "1"}, "binaryData": {"b": "AA=="}})[
        "Data"] == 2
    got = cells("secrets", "", {"type": "Opaque", "data": {"a": "MQ==", "b": "Mg=="}})
    assert (got["Type"], got["Data"]) == ("Opaque", 2)
    assert cells("serviceaccounts", "", {"secrets": [{"name": "t"}]})["Secrets"] == 1
    assert cells("serviceaccounts", "", {})["Secrets"] == 0


def test_events_core_and_v1() -> None:
    ev = {"metadata": meta("p.17a"), "type": "Warning", "reason": "BackOff",
          "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{app}"},
          "source": {"component": "kubelet", "host": "node-1"},
          "message": "  Back-off restarting failed container \n", "count": 7,
          "firstTimestamp": ago(minutes=30), "lastTimestamp": ago(seconds=20)}
    assert cells("events", "", ev) == {
        "Last Seen": "20s", "Type": "Warning", "Reason": "BackOff", "Object": "pod/web",
        "Subobject": "spec.containers{app}", "Source": "kubelet, node-1",
        "Message": "Back-off restarting failed container", "First Seen": "30m", "Count": 7,
        "Name": "p.17a"}
    new_style = {"metadata": meta("e2"), "type": "Normal", "reason": "Scheduled",
                 "regarding": {"kind": "Pod", "name": "web"}, "note": "Assigned",
                 "eventTime": "2024-05-01T11:59:00.000000Z", "reportingController": "sched",
                 "reportingInstance": "sched-1"}
    got = cells("events", "events.k8s.io", new_style)
    assert (got["Last Seen"], got["First Seen"], got["Object"], got["Message"], got["Count"],
            got["Source"]) == ("60s", "60s", "pod/web", "Assigned", 1, "sched, sched-1")
    series = dict(new_style, series={"count": 4, "lastObservedTime": ago(seconds=5)})
    got = cells("events", "events.k8s.io", series)
    assert (got["Last Seen"], got["Count"]) == ("5s", 4)
    got = cells("events", "", {})
    assert (got["Last Seen"], got["Object"], got["Count"]) == ("<unknown>", "", 1)


def test_persistent_volumes_and_claims() -> None:
    pv = {"metadata": meta("pv1", annotations={}),
          "spec": {"capacity": {"storage": "10Gi"},
                   "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                   "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "standard",
                   "claimRef": {"namespace": "default", "name": "data"},
                   "volumeMode": "Filesystem"},
          "status": {"phase": "Bound"}}
    assert cells("persistentvolumes", "", pv) == {
        "Name": "pv1", "Capacity": "10Gi", "Access Modes": "RWO,RWX",
        "Reclaim Policy": "Retain", "Status": "Bound", "Claim": "default/data",
        "StorageClass": "standard", "VolumeAttributesClass": "<unset>", "Reason": "",
        "Age": "5m", "VolumeMode": "Filesystem"}
    got = cells("persistentvolumes", "", {"metadata": {"deletionTimestamp": ago(seconds=1)}})
    assert (got["Capacity"], got["Status"], got["VolumeMode"]) == ("0", "Terminating", "<unset>")
    pvc = {"metadata": meta("data", annotations={
               "volume.beta.kubernetes.io/storage-class": "legacy"}),
           "spec": {"volumeName": "pv1", "storageClassName": "standard"},
           "status": {"phase": "Bound", "capacity": {"storage": "10Gi"},
                      "accessModes": ["ReadWriteOnce"]}}
    got = cells("persistentvolumeclaims", "", pvc)
    assert (got["Status"], got["Volume"], got["Capacity"], got["Access Modes"],
            got["StorageClass"]) == ("Bound", "pv1", "10Gi", "RWO", "legacy")
    pending = {"spec": {"storageClassName": "fast"}, "status": {"phase": "Pending",
                                                               "capacity": {"storage": "1Gi"}}}
    got = cells("persistentvolumeclaims", "", pending)
    assert (got["Capacity"], got["Access Modes"], got["StorageClass"]) == ("", "", "fast")


def test_storage_classes() -> None:
    default = {"metadata": meta("standard", annotations={
        "storageclass.kubernetes.io/is-default-class": "true"}),
        "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Delete", "allowVolumeExpansion": True}
    assert cells("storageclasses", "storage.k8s.io", default) == {
        "Name": "standard (default)", "Provisioner": "rancher.io/local-path",
        "ReclaimPolicy": "Delete", "VolumeBindingMode": "WaitForFirstConsumer",
        "AllowVolumeExpansion": True, "Age": "5m"}
    got = cells("storageclasses", "storage.k8s.io", {"metadata": {"name": "slow", "annotations": {
        "storageclass.kubernetes.io/is-default-class": "false"}}})
    assert (got["Name"], got["ReclaimPolicy"], got["VolumeBindingMode"],
            got["AllowVolumeExpansion"]) == ("slow", "Delete", "Immediate", False)


def test_resource_quota_and_limit_range() -> None:
    quota = {"metadata": meta("q"), "status": {
        "hard": {"pods": "10", "requests.cpu": "2", "limits.memory": "1Gi", "limits.cpu": "4"},
        "used": {"pods": "3", "requests.cpu": "500m", "limits.cpu": "1"}}}
    got = cells("resourcequotas", "", quota)
    assert got["Request"] == "pods: 3/10, requests.cpu: 500m/2"
    assert got["Limit"] == "limits.cpu: 1/4, limits.memory: 0/1Gi"
    assert [c["name"] for c in column_definitions("limitranges", "")] == ["Name", "Created At"]


# -- policy, rbac, autoscaling, misc ----------------------------------------------------


def test_pdb_priority_class_lease_revision() -> None:
    got = cells("poddisruptionbudgets", "policy",
                {"spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}})
    assert (got["Min Available"], got["Max Unavailable"], got["Allowed Disruptions"]) == (
        "50%", "N/A", 1)
    assert cells("poddisruptionbudgets", "policy", {"spec": {"maxUnavailable": 1}})[
        "Max Unavailable"] == "1"
    pc = {"metadata": meta("high"), "value": 1000, "globalDefault": True,
          "preemptionPolicy": "Never"}
    assert cells("priorityclasses", "scheduling.k8s.io", pc) == {
        "Name": "high", "Value": 1000, "Global-Default": True, "Age": "5m",
        "PreemptionPolicy": "Never"}
    assert cells("leases", "coordination.k8s.io",
                 {"spec": {"holderIdentity": "kubi-1"}})["Holder"] == "kubi-1"
    rev = {"metadata": meta("web-7d4", ownerReferences=[
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": True}]),
        "revision": 3}
    got = cells("controllerrevisions", "apps", rev)
    assert (got["Controller"], got["Revision"]) == ("statefulset.apps/web", 3)
    assert cells("controllerrevisions", "apps", {})["Controller"] == "<none>"


def test_role_bindings() -> None:
    rb = {"metadata": meta("rb"), "roleRef": {"kind": "ClusterRole", "name": "view"},
          "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"},
                       {"kind": "ServiceAccount", "namespace": "ci", "name": "bot"},
                       {"kind": "User", "name": "bob"}]}
    assert cells("rolebindings", "rbac.authorization.k8s.io", rb) == {
        "Name": "rb", "Role": "ClusterRole/view", "Age": "5m", "Users": "alice, bob",
        "Groups": "devs", "ServiceAccounts": "ci/bot"}
    got = cells("clusterrolebindings", "rbac.authorization.k8s.io", {})
    assert (got["Role"], got["Users"]) == ("/", "")


def test_hpa_v2_and_v1() -> None:
    v2 = {"metadata": meta("web"), "spec": {
        "scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1,
        "maxReplicas": 5,
        "metrics": [
            {"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": 80}}},
            {"type": "Resource", "resource": {"name": "memory", "target": {
                "type": "AverageValue", "averageValue": "500Mi"}}},
            {"type": "Pods", "pods": {"target": {"averageValue": "1k"}}},
        ]},
        "status": {"currentReplicas": 2, "currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu",
                                              "current": {"averageUtilization": 30}}}]}}
    got = cells("horizontalpodautoscalers", "autoscaling", v2)
    assert (got["Reference"], got["Targets"], got["MinPods"], got["MaxPods"],
            got["Replicas"]) == ("Deployment/web",
                                 "cpu: 30%/80%, memory: <unknown>/500Mi + 1 more...", "1", 5, 2)
    v1 = {"apiVersion": "autoscaling/v1", "metadata": meta("web"), "spec": {
        "scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3,
        "targetCPUUtilizationPercentage": 50}, "status": {"currentCPUUtilizationPercentage": 10}}
    got = cells("horizontalpodautoscalers", "autoscaling", v1)
    assert (got["Targets"], got["MinPods"]) == ("cpu: 10%/50%", "<unset>")
    assert cells("horizontalpodautoscalers", "autoscaling", {})["Targets"] == "<none>"


def test_pod_templates() -> None:
    obj = {"metadata": meta("t"), "template": {"metadata": {"labels": {"app": "x"}},
                                               "spec": TEMPLATE["spec"]}}
    assert cells("podtemplates", "", obj) == {"Name": "t", "Containers": "web,log",
                                              "Images": "nginx:1,busybox", "Pod Labels": "app=x"}


# -- the Table envelope ---------------------------------------------------------------------


def test_table_envelope_and_metadata() -> None:
    objs = [{"metadata": meta("a", labels={"x": "1"})}, {"metadata": meta("b")}]
    t = table("configmaps", "", objs, now=NOW,
              list_meta={"resourceVersion": "42", "continue": "tok", "remainingItemCount": 3})
    assert t["kind"] == "Table"
    assert t["apiVersion"] == "meta.k8s.io/v1"
    assert t["metadata"] == {"resourceVersion": "42", "continue": "tok", "remainingItemCount": 3}
    assert [r["cells"][0] for r in t["rows"]] == ["a", "b"]
    partial = t["rows"][0]["object"]
    assert partial == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                       "metadata": objs[0]["metadata"]}
    # The partial object is a copy: editing it leaves the stored object alone.
    partial["metadata"]["labels"]["x"] = "2"
    assert objs[0]["metadata"]["labels"] == {"x": "1"}
    assert table("configmaps", "", [], now=NOW) == {
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {},
        "columnDefinitions": column_definitions("configmaps", ""), "rows": []}


def test_include_object_variants() -> None:
    obj = {"metadata": meta("a"), "data": {"k": "v"}}
    assert row("configmaps", "", obj, now=NOW, include_object="Object")["object"] is obj
    assert "object" not in row("configmaps", "", obj, now=NOW, include_object="None")
    with pytest.raises(StatusError) as info:
        table("configmaps", "", [obj], now=NOW, include_object="Everything")
    assert info.value.code == 400
    assert info.value.message == 'unrecognized includeObject value: "Everything"'
