"""The Kubernetes side: the API wrapper, reference resolution, the controller loop and the thin kopf handlers."""
