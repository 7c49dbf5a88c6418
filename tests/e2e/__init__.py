"""End-to-end tests against a real kube-apiserver + etcd (``tests/support/control_plane.py``)."""
