"""Registry strategies per kind; importing this package registers them all."""

from kubi.apiserver.registry import cluster, core, ingress_v1beta1, pods, workloads

__all__ = ["cluster", "core", "ingress_v1beta1", "pods", "workloads"]
