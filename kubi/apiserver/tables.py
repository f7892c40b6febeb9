"""Server-side `meta.k8s.io/v1` Table rendering, as `kubectl get` asks for it.

Columns and cells follow upstream's pkg/printers/internalversion for every kind Kubi
serves; anything else gets the default convertor's Name / Created At. Like upstream's
TableConvertor, rows always carry the wide (priority 1) cells too: kubectl hides
those columns unless `-o wide`.

Objects are wire-form dicts and may be minimal: every field is optional here.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from kubi.api import schemas
from kubi.api.errors import StatusError, bad_request
from kubi.apiserver.selectors import format_label_selector, format_labels
from kubi.apiserver.selectors import label_selector_from_dict as _selector_of

Obj = dict[str, Any]
Cell = Any  # str, int or bool, as upstream's cells

INCLUDE_OBJECT_VALUES = ("Object", "Metadata", "None")


# -- time ------------------------------------------------------------------------

def human_duration(delta: timedelta) -> str:
    """Upstream's duration.HumanDuration: ~2-3 significant figures, e.g. 3m20s, 2d3h, 5y."""
    micros = delta // timedelta(microseconds=1)
    seconds = micros // 1_000_000 if micros >= 0 else -((-micros) // 1_000_000)
    # Up to a second of clock skew reads as "now".
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        rest = seconds % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 (micro)time from the wire; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _aware(now: datetime) -> datetime:
    return now if now.tzinfo else now.replace(tzinfo=UTC)


def _since(value: Any, now: datetime) -> str:
    """Upstream's translateTimestampSince: `<unknown>` for a zero time."""
    when = parse_time(value)
    if when is None:
        return "<unknown>"
    return human_duration(_aware(now) - when)


# -- field access that never fails ------------------------------------------------

def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _dict(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dicts(value: Any) -> list[Obj]:
    return [v for v in _list(value) if isinstance(v, dict)]


def _str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0


def _name(obj: Obj) -> str:
    return _str(_get(obj, "metadata", "name"))


def _age(obj: Obj, now: datetime) -> str:
    return _since(_get(obj, "metadata", "creationTimestamp"), now)


def _quantity(value: Any) -> str:
    """A resource.Quantity as printed; a missing quantity is zero."""
    if value is None or value == "":
        return "0"
    return _str(value)


def _quantity_ptr(value: Any) -> str:
    """A *resource.Quantity as printed: Go prints a nil pointer as `<nil>`."""
    if value is None:
        return "<nil>"
    return _str(value)


# -- column definitions -----------------------------------------------------------

@cache
def _doc(definition: str, prop: str) -> str:
    """A field's description from upstream's OpenAPI (what SwaggerDoc() returns)."""
    schema = schemas.definitions().get(definition) or {}
    return _str(_dict(_dict(schema.get("properties")).get(prop)).get("description"))


META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
CORE = "io.k8s.api.core.v1."
APPS = "io.k8s.api.apps.v1."


@dataclass(frozen=True)
class Column:
    name: str
    type: str = "string"
    description: tuple[str, str] | str = ""
    priority: int = 0
    format: str = ""

    def to_dict(self) -> Obj:
        desc = self.description
        text = _doc(*desc) if isinstance(desc, tuple) else desc
        return {"name": self.name, "type": self.type, "format": self.format,
                "description": text, "priority": self.priority}


NAME = Column("Name", format="name", description=(META, "name"))
AGE = Column("Age", description=(META, "creationTimestamp"))
CONTAINERS_WIDE = Column("Containers", priority=1,
                         description="Names of each container in the template.")
IMAGES_WIDE = Column("Images", priority=1,
                     description="Images referenced by each container in the template.")


def _containers(template_spec: Any) -> tuple[str, str]:
    """Upstream's layoutContainerCells: names and images, comma-joined."""
    containers = _dicts(_get(template_spec, "containers"))
    return (",".join(_str(c.get("name")) for c in containers),
            ",".join(_str(c.get("image")) for c in containers))


def _template_cells(template_spec: Any, selector: str) -> list[Cell]:
    names, images = _containers(template_spec)
    return [names, images, selector]


# -- pods ---------------------------------------------------------------------------

POD_COLUMNS = (
    NAME,
    Column("Ready", description="The aggregate readiness state of this pod for accepting "
                                "traffic."),
    Column("Status", description="The aggregate status of the containers in this pod."),
    Column("Restarts", description="The number of times the containers in this pod have been "
                                   "restarted and when the last container in this pod has "
                                   "restarted."),
    AGE,
    Column("IP", priority=1, description=(CORE + "PodStatus", "podIP")),
    Column("Node", priority=1, description=(CORE + "PodSpec", "nodeName")),
    Column("Nominated Node", priority=1, description=(CORE + "PodStatus", "nominatedNodeName")),
    Column("Readiness Gates", priority=1, description=(CORE + "PodSpec", "readinessGates")),
)

_NODE_UNREACHABLE_REASON = "NodeLost"


def _is_restartable_init(container: Obj | None) -> bool:
    return container is not None and container.get("restartPolicy") == "Always"


def _condition_true(conditions: Any, kind: str) -> bool:
    for cond in _dicts(conditions):
        if cond.get("type") == kind:
            return cond.get("status") == "True"
    return False


def _has_condition_true(conditions: Any, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in _dicts(conditions))


def _later(current: datetime | None, candidate: Any) -> datetime | None:
    when = parse_time(candidate)
    if when is not None and (current is None or current < when):
        return when
    return current


def pod_status_cells(pod: Obj, now: datetime) -> tuple[str, str, str, list[Obj]]:
    """READY, STATUS and RESTARTS as `kubectl get pods` shows them, plus row conditions."""
    spec, status = _dict(pod.get("spec")), _dict(pod.get("status"))
    init_specs = _dicts(spec.get("initContainers"))
    init_by_name = {_str(c.get("name")): c for c in init_specs}
    total = len(_dicts(spec.get("containers"))) + sum(
        1 for c in init_specs if _is_restartable_init(c))
    ready = 0
    restarts = 0
    sidecar_restarts = 0
    last_restart: datetime | None = None
    last_sidecar_restart: datetime | None = None

    phase = _str(status.get("phase"))
    reason = _str(status.get("reason")) or phase
    for cond in _dicts(status.get("conditions")):
        if cond.get("type") == "PodScheduled" and cond.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"

    conditions: list[Obj] = []
    if phase == "Succeeded":
        conditions = [{"type": "Completed", "status": "True", "reason": "Succeeded",
                       "message": "The pod has completed successfully."}]
    elif phase == "Failed":
        conditions = [{"type": "Completed", "status": "True", "reason": "Failed",
                       "message": "The pod failed."}]

    initializing = False
    for index, cs in enumerate(_dicts(status.get("initContainerStatuses"))):
        count = _int(cs.get("restartCount"))
        restarts += count
        finished = _get(cs, "lastState", "terminated", "finishedAt")
        if _get(cs, "lastState", "terminated") is not None:
            last_restart = _later(last_restart, finished)
        sidecar = _is_restartable_init(init_by_name.get(_str(cs.get("name"))))
        if sidecar:
            sidecar_restarts += count
            if _get(cs, "lastState", "terminated") is not None:
                last_sidecar_restart = _later(last_sidecar_restart, finished)
        terminated = _get(cs, "state", "terminated")
        waiting = _get(cs, "state", "waiting")
        if isinstance(terminated, dict) and _int(terminated.get("exitCode")) == 0:
            continue
        if sidecar and cs.get("started") is True:
            if cs.get("ready") is True:
                ready += 1
            continue
        if isinstance(terminated, dict):
            if terminated.get("reason"):
                reason = "Init:" + _str(terminated["reason"])
            elif _int(terminated.get("signal")) != 0:
                reason = f"Init:Signal:{_int(terminated.get('signal'))}"
            else:
                reason = f"Init:ExitCode:{_int(terminated.get('exitCode'))}"
        elif (isinstance(waiting, dict) and waiting.get("reason")
              and waiting.get("reason") != "PodInitializing"):
            reason = "Init:" + _str(waiting["reason"])
        else:
            reason = f"Init:{index}/{len(init_specs)}"
        initializing = True
        break

    if not initializing or _condition_true(status.get("conditions"), "Initialized"):
        restarts = sidecar_restarts
        last_restart = last_sidecar_restart
        has_running = False
        for cs in reversed(_dicts(status.get("containerStatuses"))):
            restarts += _int(cs.get("restartCount"))
            if _get(cs, "lastState", "terminated") is not None:
                last_restart = _later(last_restart,
                                      _get(cs, "lastState", "terminated", "finishedAt"))
            waiting = _get(cs, "state", "waiting")
            terminated = _get(cs, "state", "terminated")
            if isinstance(waiting, dict) and waiting.get("reason"):
                reason = _str(waiting["reason"])
            elif isinstance(terminated, dict) and terminated.get("reason"):
                reason = _str(terminated["reason"])
            elif isinstance(terminated, dict):
                signal = _int(terminated.get("signal"))
                reason = (f"Signal:{signal}" if signal != 0
                          else f"ExitCode:{_int(terminated.get('exitCode'))}")
            elif cs.get("ready") is True and _get(cs, "state", "running") is not None:
                has_running = True
                ready += 1
        # A pod whose last container completed while another still runs is not done.
        if reason == "Completed" and has_running:
            reason = ("Running" if _has_condition_true(status.get("conditions"), "Ready")
                      else "NotReady")

    deleting = _get(pod, "metadata", "deletionTimestamp") is not None
    if deleting and status.get("reason") == _NODE_UNREACHABLE_REASON:
        reason = "Unknown"
    elif deleting and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"

    restarts_text = str(restarts)
    if restarts != 0 and last_restart is not None:
        restarts_text = f"{restarts} ({human_duration(_aware(now) - last_restart)} ago)"
    return f"{ready}/{total}", reason, restarts_text, conditions


def _pod_ip(status: Obj) -> str:
    ips = _dicts(status.get("podIPs"))
    return _str(ips[0].get("ip")) if ips else _str(status.get("podIP"))


def _pod_row(pod: Obj, now: datetime) -> tuple[list[Cell], list[Obj]]:
    ready, reason, restarts, conditions = pod_status_cells(pod, now)
    spec, status = _dict(pod.get("spec")), _dict(pod.get("status"))
    gates = _dicts(spec.get("readinessGates"))
    gates_text = "<none>"
    if gates:
        passed = 0
        for gate in gates:
            for cond in _dicts(status.get("conditions")):
                if cond.get("type") == gate.get("conditionType"):
                    passed += cond.get("status") == "True"
                    break
        gates_text = f"{passed}/{len(gates)}"
    cells = [_name(pod), ready, reason, restarts, _age(pod, now),
             _pod_ip(status) or "<none>", _str(spec.get("nodeName")) or "<none>",
             _str(status.get("nominatedNodeName")) or "<none>", gates_text]
    return cells, conditions


# -- workloads ----------------------------------------------------------------------

def _selector_string(sel: Any) -> str:
    """LabelSelectorAsSelector(sel).String(), `<invalid>` on error (deployments' column)."""
    try:
        return str(_selector_of(sel if isinstance(sel, dict) else None))
    except StatusError:
        return "<invalid>"


def _label_selector(sel: Any) -> str:
    return format_label_selector(sel if isinstance(sel, dict) else None)


REPLICA_SET_COLUMNS = (
    NAME,
    Column("Desired", "integer", (APPS + "ReplicaSetSpec", "replicas")),
    Column("Current", "integer", (APPS + "ReplicaSetStatus", "replicas")),
    Column("Ready", "integer", (APPS + "ReplicaSetStatus", "readyReplicas")),
    AGE, CONTAINERS_WIDE, IMAGES_WIDE,
    Column("Selector", priority=1, description=(APPS + "ReplicaSetSpec", "selector")),
)


def _replica_set_row(obj: Obj, now: datetime) -> list[Cell]:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    return [_name(obj), _int(spec.get("replicas")), _int(status.get("replicas")),
            _int(status.get("readyReplicas")), _age(obj, now),
            *_template_cells(_get(spec, "template", "spec"), _label_selector(
                spec.get("selector")))]


RC_COLUMNS = (
    NAME,
    Column("Desired", "integer", (CORE + "ReplicationControllerSpec", "replicas")),
    Column("Current", "integer", (CORE + "ReplicationControllerStatus", "replicas")),
    Column("Ready", "integer", (CORE + "ReplicationControllerStatus", "readyReplicas")),
    AGE, CONTAINERS_WIDE, IMAGES_WIDE,
    Column("Selector", priority=1, description=(CORE + "ReplicationControllerSpec",
                                                "selector")),
)


def _rc_row(obj: Obj, now: datetime) -> list[Cell]:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    return [_name(obj), _int(spec.get("replicas")), _int(status.get("replicas")),
            _int(status.get("readyReplicas")), _age(obj, now),
            *_template_cells(_get(spec, "template", "spec"),
                             format_labels(_dict(spec.get("selector"))))]


DEPLOYMENT_COLUMNS = (
    NAME,
    Column("Ready", description="Number of the pod with ready state"),
    Column("Up-to-date", description=(APPS + "DeploymentStatus", "updatedReplicas")),
    Column("Available", description=(APPS + "DeploymentStatus", "availableReplicas")),
    AGE, CONTAINERS_WIDE, IMAGES_WIDE,
    Column("Selector", priority=1, description=(APPS + "DeploymentSpec", "selector")),
)


def _deployment_row(obj: Obj, now: datetime) -> list[Cell]:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    return [_name(obj),
            f"{_int(status.get('readyReplicas'))}/{_int(spec.get('replicas'))}",
            _int(status.get("updatedReplicas")), _int(status.get("availableReplicas")),
            _age(obj, now),
            *_template_cells(_get(spec, "template", "spec"),
                             _selector_string(spec.get("selector")))]


STATEFUL_SET_COLUMNS = (
    NAME,
    Column("Ready", description="Number of the pod with ready state"),
    AGE, CONTAINERS_WIDE, IMAGES_WIDE,
)


def _stateful_set_row(obj: Obj, now: datetime) -> list[Cell]:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    names, images = _containers(_get(spec, "template", "spec"))
    return [_name(obj), f"{_int(status.get('readyReplicas'))}/{_int(spec.get('replicas'))}",
            _age(obj, now), names, images]


DAEMON_SET_COLUMNS = (
    NAME,
    Column("Desired", "integer", (APPS + "DaemonSetStatus", "desiredNumberScheduled")),
    Column("Current", "integer", (APPS + "DaemonSetStatus", "currentNumberScheduled")),
    Column("Ready", "integer", (APPS + "DaemonSetStatus", "numberReady")),
    Column("Up-to-date", "integer", (APPS + "DaemonSetStatus", "updatedNumberScheduled")),
    Column("Available", "integer", (APPS + "DaemonSetStatus", "numberAvailable")),
    Column("Node Selector", description=(CORE + "PodSpec", "nodeSelector")),
    AGE, CONTAINERS_WIDE, IMAGES_WIDE,
    Column("Selector", priority=1, description=(APPS + "DaemonSetSpec", "selector")),
)


def _daemon_set_row(obj: Obj, now: datetime) -> list[Cell]:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    template_spec = _get(spec, "template", "spec")
    return [_name(obj), _int(status.get("desiredNumberScheduled")),
            _int(status.get("currentNumberScheduled")), _int(status.get("numberReady")),
            _int(status.get("updatedNumberScheduled")), _int(status.get("numberAvailable")),
            format_labels(_dict(_get(template_spec, "nodeSelector"))), _age(obj, now),
            *_template_cells(template_spec, _label_selector(spec.get("selector")))]


JOB_COLUMNS = (
    NAME,
    Column("Status", description="Status of the job."),
    Column("Completions", description=("io.k8s.api.batch.v1.JobStatus", "succeeded")),
    Column("Duration", description="Time required to complete the job."),
    AGE, CONTAINERS_WIDE, IMAGES_WIDE,
    Column("Selector", priority=1, description=("io.k8s.api.batch.v1.JobSpec", "selector")),
)


def _job_status(obj: Obj) -> str:
    conditions = _get(obj, "status", "conditions")
    if _condition_true(conditions, "Complete"):
        return "Complete"
    if _condition_true(conditions, "Failed"):
        return "Failed"
    if _get(obj, "metadata", "deletionTimestamp") is not None:
        return "Terminating"
    if _condition_true(conditions, "Suspended"):
        return "Suspended"
    if _condition_true(conditions, "FailureTarget"):
        return "FailureTarget"
    return "Running"


def _job_row(obj: Obj, now: datetime) -> list[Cell]:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    succeeded = _int(status.get("succeeded"))
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{_int(spec.get('completions'))}"
    elif _int(spec.get("parallelism")) > 1:
        completions = f"{succeeded}/1 of {_int(spec.get('parallelism'))}"
    else:
        completions = f"{succeeded}/1"
    started = parse_time(status.get("startTime"))
    finished = parse_time(status.get("completionTime"))
    if started is None:
        duration = ""
    elif finished is None:
        duration = human_duration(_aware(now) - started)
    else:
        duration = human_duration(finished - started)
    return [_name(obj), _job_status(obj), completions, duration, _age(obj, now),
            *_template_cells(_get(spec, "template", "spec"),
                             _label_selector(spec.get("selector")))]


CRON_JOB_COLUMNS = (
    NAME,
    Column("Schedule", description=("io.k8s.api.batch.v1.CronJobSpec", "schedule")),
    Column("Timezone", description=("io.k8s.api.batch.v1.CronJobSpec", "timeZone")),
    Column("Suspend", "boolean", ("io.k8s.api.batch.v1.CronJobSpec", "suspend")),
    Column("Active", "integer", ("io.k8s.api.batch.v1.CronJobStatus", "active")),
    Column("Last Schedule", description=("io.k8s.api.batch.v1.CronJobStatus",
                                         "lastScheduleTime")),
    AGE, CONTAINERS_WIDE, IMAGES_WIDE,
    Column("Selector", priority=1, description=("io.k8s.api.batch.v1.JobSpec", "selector")),
)


def _bool_ptr(value: Any) -> str:
    if value is None:
        return "<unset>"
    return "True" if value is True else "False"


def _cron_job_row(obj: Obj, now: datetime) -> list[Cell]:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    last = status.get("lastScheduleTime")
    job_spec = _get(spec, "jobTemplate", "spec")
    time_zone = spec.get("timeZone")
    return [_name(obj), _str(spec.get("schedule")),
            "<none>" if time_zone is None else _str(time_zone), _bool_ptr(spec.get("suspend")),
            len(_list(status.get("active"))),
            "<none>" if last is None else _since(last, now), _age(obj, now),
            *_template_cells(_get(job_spec, "template", "spec"),
                             _label_selector(_get(job_spec, "selector")))]


# -- services and networking --------------------------------------------------------

SERVICE_COLUMNS = (
    NAME,
    Column("Type", description=(CORE + "ServiceSpec", "type")),
    Column("Cluster-IP", description=(CORE + "ServiceSpec", "clusterIP")),
    Column("External-IP", description=(CORE + "ServiceSpec", "externalIPs")),
    Column("Port(s)", description=(CORE + "ServiceSpec", "ports")),
    AGE,
    Column("Selector", priority=1, description=(CORE + "ServiceSpec", "selector")),
)

_LOAD_BALANCER_WIDTH = 16


def load_balancer_addresses(status: Any, wide: bool = True) -> str:
    """Sorted unique ingress IPs/hostnames; clipped to 16 characters unless wide."""
    found = set()
    for ingress in _dicts(_get(status, "ingress")):
        if ingress.get("ip"):
            found.add(_str(ingress["ip"]))
        elif ingress.get("hostname"):
            found.add(_str(ingress["hostname"]))
    text = ",".join(sorted(found))
    if not wide and len(text) > _LOAD_BALANCER_WIDTH:
        text = text[:_LOAD_BALANCER_WIDTH - 3] + "..."
    return text


def service_external_ip(svc: Obj, wide: bool = True) -> str:
    spec = _dict(svc.get("spec"))
    kind = spec.get("type")
    external = [_str(ip) for ip in _list(spec.get("externalIPs"))]
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) if external else "<none>"
    if kind == "LoadBalancer":
        lb = load_balancer_addresses(_get(svc, "status", "loadBalancer"), wide)
        if external:
            return ",".join([*(lb.split(",") if lb else []), *external])
        return lb or "<pending>"
    if kind == "ExternalName":
        return _str(spec.get("externalName"))
    return "<unknown>"


def service_ports(ports: Any) -> str:
    """`80/TCP`, or `80:30080/TCP` when a node port is allocated."""
    pieces = []
    for port in _dicts(ports):
        number, protocol = _int(port.get("port")), _str(port.get("protocol"))
        node_port = _int(port.get("nodePort"))
        pieces.append(f"{number}:{node_port}/{protocol}" if node_port > 0
                      else f"{number}/{protocol}")
    return ",".join(pieces)


def _service_row(obj: Obj, now: datetime) -> list[Cell]:
    spec = _dict(obj.get("spec"))
    cluster_ips = _list(spec.get("clusterIPs"))
    cluster_ip = _str(cluster_ips[0]) if cluster_ips else _str(spec.get("clusterIP"))
    return [_name(obj), _str(spec.get("type")), cluster_ip or "<none>",
            service_external_ip(obj), service_ports(spec.get("ports")) or "<none>",
            _age(obj, now), format_labels(_dict(spec.get("selector")))]


INGRESS_COLUMNS = (
    NAME,
    Column("Class", description="The name of the IngressClass resource that should be used "
                                "for additional configuration"),
    Column("Hosts", description="Hosts that incoming requests are matched against before the "
                                "ingress rule"),
    Column("Address", description="Address is a list containing ingress points for the "
                                  "load-balancer"),
    Column("Ports", description="Ports of TLS configurations that open"),
    AGE,
)


def _ingress_hosts(rules: list[Obj]) -> str:
    shown: list[str] = []
    more = False
    for rule in rules:
        if len(shown) == 3:
            more = True
        if not more and rule.get("host"):
            shown.append(_str(rule["host"]))
    if not shown:
        return "*"
    text = ",".join(shown)
    return f"{text} + {len(rules) - 3} more..." if more else text


def _ingress_row(obj: Obj, now: datetime) -> list[Cell]:
    spec = _dict(obj.get("spec"))
    class_name = spec.get("ingressClassName")
    return [_name(obj), "<none>" if class_name is None else _str(class_name),
            _ingress_hosts(_dicts(spec.get("rules"))),
            load_balancer_addresses(_get(obj, "status", "loadBalancer")),
            "80, 443" if _list(spec.get("tls")) else "80", _age(obj, now)]


INGRESS_CLASS_COLUMNS = (
    NAME,
    Column("Controller", description="Controller that is responsible for handling this class"),
    Column("Parameters", description="A reference to a resource with additional parameters"),
    AGE,
)


def _ingress_class_row(obj: Obj, now: datetime) -> list[Cell]:
    spec = _dict(obj.get("spec"))
    params = spec.get("parameters")
    text = "<none>"
    if isinstance(params, dict):
        text = _str(params.get("kind"))
        if params.get("apiGroup") is not None:
            text += "." + _str(params.get("apiGroup"))
        text += "/" + _str(params.get("name"))
    return [_name(obj), _str(spec.get("controller")), text, _age(obj, now)]


NETWORK_POLICY_COLUMNS = (
    NAME,
    Column("Pod-Selector", description=("io.k8s.api.networking.v1.NetworkPolicySpec",
                                        "podSelector")),
    AGE,
)


def _network_policy_row(obj: Obj, now: datetime) -> list[Cell]:
    # The pod selector is a value, not a pointer, upstream: absent means empty.
    selector = _get(obj, "spec", "podSelector")
    return [_name(obj), format_label_selector(selector if isinstance(selector, dict) else {}),
            _age(obj, now)]


ENDPOINTS_COLUMNS = (
    NAME, Column("Endpoints", description=(CORE + "Endpoints", "subsets")), AGE)


def _join_host_port(host: str, port: int) -> str:
    try:
        is_v6 = isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        is_v6 = ":" in host
    return f"[{host}]:{port}" if is_v6 else f"{host}:{port}"


def format_endpoints(subsets: Any) -> str:
    """Up to three `ip:port` pairs and a `+ N more...` count, or `<none>`."""
    subsets = _dicts(subsets)
    if not subsets:
        return "<none>"
    shown: list[str] = []
    more = False
    count = 0
    for subset in subsets:
        addresses = _dicts(subset.get("addresses"))
        ports = _dicts(subset.get("ports"))
        if not ports:
            # Headless services may have addresses without ports.
            count += len(addresses)
            for address in addresses:
                if len(shown) == 3:
                    more = True
                    break
                shown.append(_str(address.get("ip")))
            continue
        for port in ports:
            count += len(addresses)
            for address in addresses:
                if len(shown) == 3:
                    more = True
                    break
                shown.append(_join_host_port(_str(address.get("ip")), _int(port.get("port"))))
    text = ",".join(shown)
    return f"{text} + {count - 3} more..." if more else text


def _endpoints_row(obj: Obj, now: datetime) -> list[Cell]:
    return [_name(obj), format_endpoints(obj.get("subsets")), _age(obj, now)]


DISCOVERY = "io.k8s.api.discovery.v1.EndpointSlice"
ENDPOINT_SLICE_COLUMNS = (
    NAME,
    Column("AddressType", description=(DISCOVERY, "addressType")),
    Column("Ports", description=(DISCOVERY, "ports")),
    Column("Endpoints", description=(DISCOVERY, "endpoints")),
    AGE,
)


def _list_with_more(shown: list[str], more: bool, count: int) -> str:
    text = ",".join(shown)
    if more:
        return f"{text} + {count - 3} more..."
    return text or "<unset>"


def _endpoint_slice_row(obj: Obj, now: datetime) -> list[Cell]:
    ports: list[str] = []
    more_ports = False
    for port in _dicts(obj.get("ports")):
        if len(ports) < 3:
            if port.get("port") is not None:
                ports.append(str(_int(port.get("port"))))
            elif port.get("name") is not None:
                ports.append(_str(port.get("name")))
            else:
                ports.append("*")
        else:
            more_ports = True
    addresses: list[str] = []
    more_addresses = False
    address_count = 0
    for endpoint in _dicts(obj.get("endpoints")):
        for address in _list(endpoint.get("addresses")):
            if len(addresses) < 3:
                addresses.append(_str(address))
            else:
                more_addresses = True
            address_count += 1
    return [_name(obj), _str(obj.get("addressType")),
            _list_with_more(ports, more_ports, len(_dicts(obj.get("ports")))),
            _list_with_more(addresses, more_addresses, address_count), _age(obj, now)]


# -- cluster --------------------------------------------------------------------------

NODE_COLUMNS = (
    NAME,
    Column("Status", description="The status of the node"),
    Column("Roles", description="The roles of the node"),
    AGE,
    Column("Version", description=(CORE + "NodeSystemInfo", "kubeletVersion")),
    Column("Internal-IP", priority=1, description=(CORE + "NodeStatus", "addresses")),
    Column("External-IP", priority=1, description=(CORE + "NodeStatus", "addresses")),
    Column("OS-Image", priority=1, description=(CORE + "NodeSystemInfo", "osImage")),
    Column("Kernel-Version", priority=1, description=(CORE + "NodeSystemInfo",
                                                      "kernelVersion")),
    Column("Container-Runtime", priority=1, description=(CORE + "NodeSystemInfo",
                                                         "containerRuntimeVersion")),
)


def node_roles(labels: Any) -> list[str]:
    roles = set()
    for key, value in _dict(labels).items():
        if key.startswith("node-role.kubernetes.io/"):
            role = key[len("node-role.kubernetes.io/"):]
            if role:
                roles.add(role)
        elif key == "kubernetes.io/role" and value:
            roles.add(_str(value))
    return sorted(roles)


def _node_address(node: Obj, kind: str) -> str:
    for address in _dicts(_get(node, "status", "addresses")):
        if address.get("type") == kind:
            return _str(address.get("address"))
    return "<none>"


def _node_row(obj: Obj, now: datetime) -> list[Cell]:
    conditions = {c.get("type"): c for c in _dicts(_get(obj, "status", "conditions"))}
    status: list[str] = []
    if "Ready" in conditions:
        status.append("Ready" if conditions["Ready"].get("status") == "True" else "NotReady")
    if not status:
        status.append("Unknown")
    if _get(obj, "spec", "unschedulable") is True:
        status.append("SchedulingDisabled")
    info = _dict(_get(obj, "status", "nodeInfo"))
    return [_name(obj), ",".join(status),
            ",".join(node_roles(_get(obj, "metadata", "labels"))) or "<none>",
            _age(obj, now), _str(info.get("kubeletVersion")),
            _node_address(obj, "InternalIP"), _node_address(obj, "ExternalIP"),
            _str(info.get("osImage")) or "<unknown>",
            _str(info.get("kernelVersion")) or "<unknown>",
            _str(info.get("containerRuntimeVersion")) or "<unknown>"]


NAMESPACE_COLUMNS = (NAME, Column("Status", description="The status of the namespace"), AGE)


def _namespace_row(obj: Obj, now: datetime) -> list[Cell]:
    return [_name(obj), _str(_get(obj, "status", "phase")), _age(obj, now)]


EVENT = CORE + "Event"
EVENT_COLUMNS = (
    Column("Last Seen", description=(EVENT, "lastTimestamp")),
    Column("Type", description=(EVENT, "type")),
    Column("Reason", description=(EVENT, "reason")),
    Column("Object", description=(EVENT, "involvedObject")),
    Column("Subobject", priority=1, description=(CORE + "ObjectReference", "fieldPath")),
    Column("Source", priority=1, description=(EVENT, "source")),
    Column("Message", description=(EVENT, "message")),
    Column("First Seen", priority=1, description=(EVENT, "firstTimestamp")),
    Column("Count", priority=1, description=(EVENT, "count")),
    Column("Name", priority=1, format="name", description=(META, "name")),
)


def core_event_from_events_v1(obj: Obj) -> Obj:
    """An events.k8s.io/v1 Event in core/v1 shape, as upstream's internal conversion."""
    core = dict(obj)
    core["involvedObject"] = obj.get("regarding") or {}
    core["source"] = obj.get("deprecatedSource") or {}
    core["message"] = obj.get("note")
    core["firstTimestamp"] = obj.get("deprecatedFirstTimestamp")
    core["lastTimestamp"] = obj.get("deprecatedLastTimestamp")
    core["count"] = obj.get("deprecatedCount")
    return core


def _event_row(obj: Obj, now: datetime) -> list[Cell]:
    first = _since(obj.get("firstTimestamp"), now)
    if parse_time(obj.get("firstTimestamp")) is None:
        first = _since(obj.get("eventTime"), now)
    last = _since(obj.get("lastTimestamp"), now)
    if parse_time(obj.get("lastTimestamp")) is None:
        last = first
    count = _int(obj.get("count"))
    series = obj.get("series")
    if isinstance(series, dict):
        last = _since(series.get("lastObservedTime"), now)
        count = _int(series.get("count"))
    elif count == 0:
        # Singleton events of the new API carry no count.
        count = 1
    ref = _dict(obj.get("involvedObject"))
    kind = _str(ref.get("kind")).lower()
    target = f"{kind}/{_str(ref.get('name'))}" if ref.get("name") else kind
    source = _dict(obj.get("source"))
    component = _str(source.get("component")) or _str(obj.get("reportingController")) or _str(
        obj.get("reportingComponent"))
    instance = _str(source.get("host")) or _str(obj.get("reportingInstance"))
    source_text = f"{component}, {instance}" if instance else component
    message = _str(obj.get("message")).strip()
    return [last, _str(obj.get("type")), _str(obj.get("reason")), target,
            _str(ref.get("fieldPath")), source_text, message, first, count, _name(obj)]


def _events_v1_row(obj: Obj, now: datetime) -> list[Cell]:
    return _event_row(core_event_from_events_v1(obj), now)


LEASE_COLUMNS = (
    NAME,
    Column("Holder", description=("io.k8s.api.coordination.v1.LeaseSpec", "holderIdentity")),
    AGE,
)


def _lease_row(obj: Obj, now: datetime) -> list[Cell]:
    return [_name(obj), _str(_get(obj, "spec", "holderIdentity")), _age(obj, now)]


PRIORITY_CLASS = "io.k8s.api.scheduling.v1.PriorityClass"
PRIORITY_CLASS_COLUMNS = (
    NAME,
    Column("Value", "integer", (PRIORITY_CLASS, "value")),
    Column("Global-Default", "boolean", (PRIORITY_CLASS, "globalDefault")),
    AGE,
    Column("PreemptionPolicy", description=(PRIORITY_CLASS, "preemptionPolicy")),
)


def _priority_class_row(obj: Obj, now: datetime) -> list[Cell]:
    return [_name(obj), _int(obj.get("value")), obj.get("globalDefault") is True,
            _age(obj, now), _str(obj.get("preemptionPolicy"))]


# -- config and storage -------------------------------------------------------------

CONFIG_MAP_COLUMNS = (NAME, Column("Data", description=(CORE + "ConfigMap", "data")), AGE)


def _config_map_row(obj: Obj, now: datetime) -> list[Cell]:
    return [_name(obj), len(_dict(obj.get("data"))) + len(_dict(obj.get("binaryData"))),
            _age(obj, now)]


SECRET_COLUMNS = (
    NAME,
    Column("Type", description=(CORE + "Secret", "type")),
    Column("Data", description=(CORE + "Secret", "data")),
    AGE,
)


def _secret_row(obj: Obj, now: datetime) -> list[Cell]:
    return [_name(obj), _str(obj.get("type")), len(_dict(obj.get("data"))), _age(obj, now)]


SERVICE_ACCOUNT_COLUMNS = (
    NAME, Column("Secrets", description=(CORE + "ServiceAccount", "secrets")), AGE)


def _service_account_row(obj: Obj, now: datetime) -> list[Cell]:
    return [_name(obj), len(_list(obj.get("secrets"))), _age(obj, now)]


def access_modes(modes: Any) -> str:
    present = set(_list(modes))
    short = (("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"),
             ("ReadWriteOncePod", "RWOP"))
    return ",".join(abbrev for mode, abbrev in short if mode in present)


_BETA_STORAGE_CLASS = "volume.beta.kubernetes.io/storage-class"

PV = CORE + "PersistentVolumeSpec"
PV_COLUMNS = (
    NAME,
    Column("Capacity", description=(PV, "capacity")),
    Column("Access Modes", description=(PV, "accessModes")),
    Column("Reclaim Policy", description=(PV, "persistentVolumeReclaimPolicy")),
    Column("Status", description=(CORE + "PersistentVolumeStatus", "phase")),
    Column("Claim", description=(PV, "claimRef")),
    Column("StorageClass", description="StorageClass of the pv"),
    Column("VolumeAttributesClass", description="VolumeAttributesClass of the pv"),
    Column("Reason", description=(CORE + "PersistentVolumeStatus", "reason")),
    AGE,
    Column("VolumeMode", priority=1, description=(PV, "volumeMode")),
)


def _storage_class_of(obj: Obj) -> str:
    annotations = _dict(_get(obj, "metadata", "annotations"))
    if _BETA_STORAGE_CLASS in annotations:
        return _str(annotations[_BETA_STORAGE_CLASS])
    return _str(_get(obj, "spec", "storageClassName"))


def _pv_row(obj: Obj, now: datetime) -> list[Cell]:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    claim = spec.get("claimRef")
    claim_text = (f"{_str(_get(claim, 'namespace'))}/{_str(_get(claim, 'name'))}"
                  if isinstance(claim, dict) else "")
    phase = _str(status.get("phase"))
    if _get(obj, "metadata", "deletionTimestamp") is not None:
        phase = "Terminating"
    vac = spec.get("volumeAttributesClassName")
    mode = spec.get("volumeMode")
    return [_name(obj), _quantity(_get(spec, "capacity", "storage")),
            access_modes(spec.get("accessModes")),
            _str(spec.get("persistentVolumeReclaimPolicy")), phase, claim_text,
            _storage_class_of(obj), "<unset>" if vac is None else _str(vac),
            _str(status.get("reason")), _age(obj, now),
            "<unset>" if mode is None else _str(mode)]


PVC = CORE + "PersistentVolumeClaim"
PVC_COLUMNS = (
    NAME,
    Column("Status", description=(PVC + "Status", "phase")),
    Column("Volume", description=(PVC + "Spec", "volumeName")),
    Column("Capacity", description=(PVC + "Status", "capacity")),
    Column("Access Modes", description=(PVC + "Status", "accessModes")),
    Column("StorageClass", description="StorageClass of the pvc"),
    Column("VolumeAttributesClass", description="VolumeAttributesClass of the pvc"),
    AGE,
    Column("VolumeMode", priority=1, description=(PVC + "Spec", "volumeMode")),
)


def _pvc_row(obj: Obj, now: datetime) -> list[Cell]:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    phase = _str(status.get("phase"))
    if _get(obj, "metadata", "deletionTimestamp") is not None:
        phase = "Terminating"
    capacity = modes = ""
    if spec.get("volumeName"):
        modes = access_modes(status.get("accessModes"))
        capacity = _quantity(_get(status, "capacity", "storage"))
    vac = spec.get("volumeAttributesClassName")
    mode = spec.get("volumeMode")
    return [_name(obj), phase, _str(spec.get("volumeName")), capacity, modes,
            _storage_class_of(obj), "<unset>" if vac is None else _str(vac), _age(obj, now),
            "<unset>" if mode is None else _str(mode)]


STORAGE_CLASS = "io.k8s.api.storage.v1.StorageClass"
STORAGE_CLASS_COLUMNS = (
    NAME,
    Column("Provisioner", description=(STORAGE_CLASS, "provisioner")),
    Column("ReclaimPolicy", description=(STORAGE_CLASS, "reclaimPolicy")),
    Column("VolumeBindingMode", description=(STORAGE_CLASS, "volumeBindingMode")),
    Column("AllowVolumeExpansion", description=(STORAGE_CLASS, "allowVolumeExpansion")),
    AGE,
)

_DEFAULT_CLASS_ANNOTATIONS = ("storageclass.kubernetes.io/is-default-class",
                              "storageclass.beta.kubernetes.io/is-default-class")


def _storage_class_row(obj: Obj, now: datetime) -> list[Cell]:
    annotations = _dict(_get(obj, "metadata", "annotations"))
    name = _name(obj)
    if any(annotations.get(a) == "true" for a in _DEFAULT_CLASS_ANNOTATIONS):
        name += " (default)"
    reclaim = obj.get("reclaimPolicy")
    binding = obj.get("volumeBindingMode")
    return [name, _str(obj.get("provisioner")),
            "Delete" if reclaim is None else _str(reclaim),
            "Immediate" if binding is None else _str(binding),
            obj.get("allowVolumeExpansion") is True, _age(obj, now)]


RESOURCE_QUOTA_COLUMNS = (
    NAME,
    Column("Request", description="Request represents a minimum amount of cpu/memory that a "
                                  "container may consume."),
    Column("Limit", description="Limits control the maximum amount of cpu/memory that a "
                                "container may use independent of contention on the node."),
    AGE,
)


def _resource_quota_row(obj: Obj, now: datetime) -> list[Cell]:
    hard = _dict(_get(obj, "status", "hard"))
    used = _dict(_get(obj, "status", "used"))
    requests: list[str] = []
    limits: list[str] = []
    for resource in sorted(hard):
        pieces = resource.split(".")
        target = limits if len(pieces) > 1 and pieces[0] == "limits" else requests
        target.append(f"{resource}: {_quantity(used.get(resource))}/{_quantity(hard[resource])}")
    return [_name(obj), ", ".join(requests), ", ".join(limits), _age(obj, now)]


# -- policy, RBAC, autoscaling, misc ----------------------------------------------------

PDB_COLUMNS = (
    NAME,
    Column("Min Available", description="The minimum number of pods that must be available."),
    Column("Max Unavailable", description="The maximum number of pods that may be "
                                          "unavailable."),
    Column("Allowed Disruptions", "integer", "Calculated number of pods that may be disrupted "
                                             "at this time."),
    AGE,
)


def _pdb_row(obj: Obj, now: datetime) -> list[Cell]:
    spec = _dict(obj.get("spec"))
    min_available = spec.get("minAvailable")
    max_unavailable = spec.get("maxUnavailable")
    return [_name(obj), "N/A" if min_available is None else _str(min_available),
            "N/A" if max_unavailable is None else _str(max_unavailable),
            _int(_get(obj, "status", "disruptionsAllowed")), _age(obj, now)]


def _binding_columns(what: str) -> tuple[Column, ...]:
    return (
        NAME,
        Column("Role", description=("io.k8s.api.rbac.v1." + what[0].upper() + what[1:],
                                    "roleRef")),
        AGE,
        Column("Users", priority=1, description=f"Users in the {what}"),
        Column("Groups", priority=1, description=f"Groups in the {what}"),
        Column("ServiceAccounts", priority=1, description=f"ServiceAccounts in the {what}"),
    )


def _binding_row(obj: Obj, now: datetime) -> list[Cell]:
    ref = _dict(obj.get("roleRef"))
    users: list[str] = []
    groups: list[str] = []
    service_accounts: list[str] = []
    for subject in _dicts(obj.get("subjects")):
        kind, name = subject.get("kind"), _str(subject.get("name"))
        if kind == "ServiceAccount":
            service_accounts.append(f"{_str(subject.get('namespace'))}/{name}")
        elif kind == "User":
            users.append(name)
        elif kind == "Group":
            groups.append(name)
    return [_name(obj), f"{_str(ref.get('kind'))}/{_str(ref.get('name'))}", _age(obj, now),
            ", ".join(users), ", ".join(groups), ", ".join(service_accounts)]


HPA = "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler"
HPA_COLUMNS = (
    NAME,
    Column("Reference", description=(HPA + "Spec", "scaleTargetRef")),
    Column("Targets", description=(HPA + "Spec", "metrics")),
    Column("MinPods", description=(HPA + "Spec", "minReplicas")),
    Column("MaxPods", description=(HPA + "Spec", "maxReplicas")),
    Column("Replicas", description=(HPA + "Status", "currentReplicas")),
    AGE,
)


def hpa_v2_from_v1(obj: Obj) -> Obj:
    """An autoscaling/v1 HPA in v2 shape: its CPU target becomes a Resource metric."""
    v2 = copy.deepcopy(obj)
    spec = _dict(obj.get("spec"))
    status = _dict(obj.get("status"))
    target = spec.get("targetCPUUtilizationPercentage")
    new_spec = {k: v for k, v in spec.items() if k != "targetCPUUtilizationPercentage"}
    if target is not None:
        new_spec["metrics"] = [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}}]
    v2["spec"] = new_spec
    current = status.get("currentCPUUtilizationPercentage")
    new_status = {k: v for k, v in status.items() if k != "currentCPUUtilizationPercentage"}
    if current is not None:
        new_status["currentMetrics"] = [{"type": "Resource", "resource": {
            "name": "cpu", "current": {"averageUtilization": current}}}]
    v2["status"] = new_status
    return v2


def _metric_source(spec: Obj, statuses: list[Obj], index: int, key: str) -> tuple[Obj, Obj | None]:
    source = _dict(spec.get(key))
    status = statuses[index].get(key) if index < len(statuses) else None
    return source, status if isinstance(status, dict) else None


def format_hpa_metrics(specs: Any, statuses: Any) -> str:
    """Upstream's formatHPAMetrics: `cpu: 30%/80%`, at most two, then `+ N more...`."""
    specs, statuses = _dicts(specs), _dicts(statuses)
    if not specs:
        return "<none>"
    shown: list[str] = []
    for i, spec in enumerate(specs):
        kind = spec.get("type")
        if kind in ("External", "Object"):
            key = "external" if kind == "External" else "object"
            source, status = _metric_source(spec, statuses, i, key)
            target = _dict(source.get("target"))
            current = _dict(_get(status, "current"))
            if target.get("averageValue") is not None:
                now_value = ("<unknown>" if status is None or current.get("averageValue") is None
                             else _quantity_ptr(current.get("averageValue")))
                shown.append(f"{now_value}/{_quantity_ptr(target.get('averageValue'))} (avg)")
            else:
                now_value = ("<unknown>" if status is None
                             else _quantity_ptr(current.get("value")))
                shown.append(f"{now_value}/{_quantity_ptr(target.get('value'))}")
        elif kind == "Pods":
            source, status = _metric_source(spec, statuses, i, "pods")
            now_value = ("<unknown>" if status is None
                         else _quantity_ptr(_get(status, "current", "averageValue")))
            shown.append(f"{now_value}/{_quantity_ptr(_get(source, 'target', 'averageValue'))}")
        elif kind in ("Resource", "ContainerResource"):
            key = "resource" if kind == "Resource" else "containerResource"
            source, status = _metric_source(spec, statuses, i, key)
            target = _dict(source.get("target"))
            name = _str(source.get("name"))
            if target.get("averageValue") is not None:
                now_value = ("<unknown>" if status is None
                             else _quantity_ptr(_get(status, "current", "averageValue")))
                shown.append(f"{name}: {now_value}/{_quantity_ptr(target.get('averageValue'))}")
            else:
                utilization = _get(status, "current", "averageUtilization")
                now_value = "<unknown>" if utilization is None else f"{_int(utilization)}%"
                goal = target.get("averageUtilization")
                goal_text = "<auto>" if goal is None else f"{_int(goal)}%"
                shown.append(f"{name}: {now_value}/{goal_text}")
        else:
            shown.append("<unknown type>")
    if len(shown) > 2:
        return f"{', '.join(shown[:2])} + {len(shown) - 2} more..."
    return ", ".join(shown)


def _hpa_row(obj: Obj, now: datetime) -> list[Cell]:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    ref = _dict(spec.get("scaleTargetRef"))
    min_replicas = spec.get("minReplicas")
    return [_name(obj), f"{_str(ref.get('kind'))}/{_str(ref.get('name'))}",
            format_hpa_metrics(spec.get("metrics"), status.get("currentMetrics")),
            "<unset>" if min_replicas is None else str(_int(min_replicas)),
            _int(spec.get("maxReplicas")), _int(status.get("currentReplicas")), _age(obj, now)]


def _hpa_v1_row(obj: Obj, now: datetime) -> list[Cell]:
    return _hpa_row(hpa_v2_from_v1(obj), now)


CONTROLLER_REVISION_COLUMNS = (
    NAME,
    Column("Controller", description="Controller of the object"),
    Column("Revision", description=(APPS + "ControllerRevision", "revision")),
    AGE,
)


def _controller_revision_row(obj: Obj, now: datetime) -> list[Cell]:
    controller = "<none>"
    for ref in _dicts(_get(obj, "metadata", "ownerReferences")):
        if ref.get("controller") is True:
            api_version = _str(ref.get("apiVersion"))
            group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
            kind = _str(ref.get("kind"))
            group_kind = f"{kind}.{group}" if group else kind
            name = _str(ref.get("name"))
            controller = f"{group_kind.lower()}/{name}" if group_kind else name
            break
    return [_name(obj), controller, _int(obj.get("revision")), _age(obj, now)]


POD_TEMPLATE_COLUMNS = (
    NAME,
    Column("Containers", description="Names of each container in the template."),
    Column("Images", description="Images referenced by each container in the template."),
    Column("Pod Labels", description="The labels for the pod template."),
)


def _pod_template_row(obj: Obj, now: datetime) -> list[Cell]:
    template = _dict(obj.get("template"))
    names, images = _containers(template.get("spec"))
    return [_name(obj), names, images, format_labels(_dict(_get(template, "metadata",
                                                                 "labels")))]


DEFAULT_COLUMNS = (
    NAME,
    Column("Created At", "date", (META, "creationTimestamp")),
)


def _default_row(obj: Obj, now: datetime) -> list[Cell]:
    created = parse_time(_get(obj, "metadata", "creationTimestamp"))
    stamp = (created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if created
             else "0001-01-01T00:00:00Z")
    return [_name(obj), stamp]


# -- the registry of printers ----------------------------------------------------------

RowFn = Callable[[Obj, datetime], list[Cell]]


@dataclass(frozen=True)
class Printer:
    columns: tuple[Column, ...]
    row: RowFn


def _pod_cells(obj: Obj, now: datetime) -> list[Cell]:
    return _pod_row(obj, now)[0]


PRINTERS: dict[tuple[str, str], Printer] = {
    ("", "pods"): Printer(POD_COLUMNS, _pod_cells),
    ("", "configmaps"): Printer(CONFIG_MAP_COLUMNS, _config_map_row),
    ("", "endpoints"): Printer(ENDPOINTS_COLUMNS, _endpoints_row),
    ("", "events"): Printer(EVENT_COLUMNS, _event_row),
    ("", "namespaces"): Printer(NAMESPACE_COLUMNS, _namespace_row),
    ("", "nodes"): Printer(NODE_COLUMNS, _node_row),
    ("", "persistentvolumeclaims"): Printer(PVC_COLUMNS, _pvc_row),
    ("", "persistentvolumes"): Printer(PV_COLUMNS, _pv_row),
    ("", "podtemplates"): Printer(POD_TEMPLATE_COLUMNS, _pod_template_row),
    ("", "replicationcontrollers"): Printer(RC_COLUMNS, _rc_row),
    ("", "resourcequotas"): Printer(RESOURCE_QUOTA_COLUMNS, _resource_quota_row),
    ("", "secrets"): Printer(SECRET_COLUMNS, _secret_row),
    ("", "serviceaccounts"): Printer(SERVICE_ACCOUNT_COLUMNS, _service_account_row),
    ("", "services"): Printer(SERVICE_COLUMNS, _service_row),
    ("apps", "controllerrevisions"): Printer(CONTROLLER_REVISION_COLUMNS,
                                             _controller_revision_row),
    ("apps", "daemonsets"): Printer(DAEMON_SET_COLUMNS, _daemon_set_row),
    ("apps", "deployments"): Printer(DEPLOYMENT_COLUMNS, _deployment_row),
    ("apps", "replicasets"): Printer(REPLICA_SET_COLUMNS, _replica_set_row),
    ("apps", "statefulsets"): Printer(STATEFUL_SET_COLUMNS, _stateful_set_row),
    ("batch", "cronjobs"): Printer(CRON_JOB_COLUMNS, _cron_job_row),
    ("batch", "jobs"): Printer(JOB_COLUMNS, _job_row),
    ("autoscaling", "horizontalpodautoscalers"): Printer(HPA_COLUMNS, _hpa_row),
    ("networking.k8s.io", "ingressclasses"): Printer(INGRESS_CLASS_COLUMNS,
                                                     _ingress_class_row),
    ("networking.k8s.io", "ingresses"): Printer(INGRESS_COLUMNS, _ingress_row),
    # extensions/v1beta1 Ingress (removed upstream in 1.22): the row reads no backend.
    ("extensions", "ingresses"): Printer(INGRESS_COLUMNS, _ingress_row),
    ("networking.k8s.io", "networkpolicies"): Printer(NETWORK_POLICY_COLUMNS,
                                                      _network_policy_row),
    ("storage.k8s.io", "storageclasses"): Printer(STORAGE_CLASS_COLUMNS, _storage_class_row),
    ("rbac.authorization.k8s.io", "rolebindings"): Printer(_binding_columns("roleBinding"),
                                                           _binding_row),
    ("rbac.authorization.k8s.io", "clusterrolebindings"): Printer(
        _binding_columns("clusterRoleBinding"), _binding_row),
    ("coordination.k8s.io", "leases"): Printer(LEASE_COLUMNS, _lease_row),
    ("discovery.k8s.io", "endpointslices"): Printer(ENDPOINT_SLICE_COLUMNS,
                                                    _endpoint_slice_row),
    ("events.k8s.io", "events"): Printer(EVENT_COLUMNS, _events_v1_row),
    ("policy", "poddisruptionbudgets"): Printer(PDB_COLUMNS, _pdb_row),
    ("scheduling.k8s.io", "priorityclasses"): Printer(PRIORITY_CLASS_COLUMNS,
                                                      _priority_class_row),
}

DEFAULT_PRINTER = Printer(DEFAULT_COLUMNS, _default_row)


def _printer(resource: str, group: str) -> Printer:
    return PRINTERS.get((group, resource), DEFAULT_PRINTER)


def column_definitions(resource: str, group: str) -> list[Obj]:
    """The Table's columnDefinitions for a resource (wide columns have priority 1)."""
    return [c.to_dict() for c in _printer(resource, group).columns]


def _row_object(obj: Obj, include_object: str) -> Obj | None:
    if include_object == "Object":
        return obj
    if include_object in ("Metadata", ""):
        return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": copy.deepcopy(_dict(obj.get("metadata")))}
    if include_object == "None":
        return None
    raise bad_request(f'unrecognized includeObject value: "{include_object}"')


def _is_hpa_v1(obj: Obj) -> bool:
    return (obj.get("apiVersion") == "autoscaling/v1"
            or "targetCPUUtilizationPercentage" in _dict(obj.get("spec"))
            or "currentCPUUtilizationPercentage" in _dict(obj.get("status")))


def row(resource: str, group: str, obj: Obj, *, now: datetime,
        include_object: str = "Metadata") -> Obj:
    """One TableRow: cells (wide ones included), conditions, and the object as asked.

    `include_object` is `Metadata` (kubectl's default), `Object` or `None`; any other
    value is a 400. An autoscaling/v1 HPA is read through its v2 equivalent.
    """
    if not isinstance(obj, dict):
        obj = {}
    conditions: list[Obj] = []
    if (group, resource) == ("", "pods"):
        cells, conditions = _pod_row(obj, now)
    elif (group, resource) == ("autoscaling", "horizontalpodautoscalers") and _is_hpa_v1(obj):
        cells = _hpa_v1_row(obj, now)
    else:
        cells = _printer(resource, group).row(obj, now)
    result: Obj = {"cells": cells}
    if conditions:
        result["conditions"] = conditions
    embedded = _row_object(obj, include_object)
    if embedded is not None:
        result["object"] = embedded
    return result


def table(resource: str, group: str, objects: list[Obj], *, now: datetime,
          include_object: str = "Metadata", list_meta: Obj | None = None) -> Obj:
    """A full `meta.k8s.io/v1` Table for a list (or, with one object, a single GET).

    `list_meta` supplies resourceVersion / continue / remainingItemCount; for a single
    object pass its own resourceVersion, as upstream does.
    """
    if include_object not in (*INCLUDE_OBJECT_VALUES, ""):
        raise bad_request(f'unrecognized includeObject value: "{include_object}"')
    metadata: Obj = {}
    for key in ("resourceVersion", "continue", "remainingItemCount"):
        value = _dict(list_meta).get(key)
        if value not in (None, ""):
            metadata[key] = value
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": column_definitions(resource, group),
        "rows": [row(resource, group, obj, now=now, include_object=include_object)
                 for obj in objects],
    }
