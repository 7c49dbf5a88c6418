"""Chaos scenarios: the operator on a 3-primary/3-replica cluster while nodes, the operator and the control plane fail."""
