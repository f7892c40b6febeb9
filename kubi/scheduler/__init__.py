"""The scheduler: assigns pending pods to nodes as upstream kube-scheduler does."""

from kubi.scheduler.scheduler import Scheduler, run_scheduler

__all__ = ["Scheduler", "run_scheduler"]
