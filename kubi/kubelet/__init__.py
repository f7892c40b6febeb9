"""The node agent: kubelet semantics over a CRI-shaped runtime (real or simulated)."""
