"""The agent's effective configuration as the kubelet's /configz shows it:
`{"kubeletconfig": {KubeletConfiguration fields}}` (kubelet.config.k8s.io/v1beta1 names,
durations as Go prints them). Only settings the agent really has are listed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubi.api.durations import go_duration_seconds

if TYPE_CHECKING:
    from kubi.kubelet.agent import AgentConfig

Obj = dict[str, Any]


def kubelet_configuration(config: AgentConfig, port: int | None = None,
                          tls_cert: Path | None = None, tls_key: Path | None = None,
                          max_pods: int = 110) -> Obj:
    """The KubeletConfiguration the agent runs with (`port`: the one it serves on)."""
    settings: Obj = {
        "kind": "KubeletConfiguration",
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "enableServer": bool(config.api_token),
        "syncFrequency": go_duration_seconds(config.sync_period),
        "address": config.api_bind,
        "port": port if port is not None else config.api_port,
        "authentication": {"x509": {}, "webhook": {"enabled": False},
                           "anonymous": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "registerNode": True,
        "clusterDomain": config.cluster_domain,
        "clusterDNS": list(config.cluster_dns),
        "nodeStatusReportFrequency": go_duration_seconds(config.status_report_interval),
        "nodeLeaseDurationSeconds": config.lease_duration,
        "cgroupRoot": config.cgroup_root,
        "cgroupsPerQOS": False,
        "cgroupDriver": "cgroupfs",
        "maxPods": max_pods,
        "podCIDR": config.pod_cidr,
        "enableDebuggingHandlers": True,
        "failSwapOn": False,
        "imageGCHighThresholdPercent": config.image_gc.high_percent,
        "imageGCLowThresholdPercent": config.image_gc.low_percent,
    }
    if tls_cert is not None and tls_key is not None:
        settings["tlsCertFile"] = str(tls_cert)
        settings["tlsPrivateKeyFile"] = str(tls_key)
    if not settings["podCIDR"]:
        del settings["podCIDR"]
    return {"kubeletconfig": settings}
