"""Registry strategies per kind; importing this package registers them all."""

from kubi.apiserver.registry import cluster, core, pods, workloads

__all__ = ["cluster", "core", "pods", "workloads"]
