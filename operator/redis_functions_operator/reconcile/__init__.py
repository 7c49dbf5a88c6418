"""Reconciliation, without kopf: a RedisFunctionLibrary's spec → engine inputs, and an engine result → status,
conditions, events and the time of the next visit. Pure functions over plain data; the k8s layer does the I/O."""
