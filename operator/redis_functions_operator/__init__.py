"""redis-functions-operator: Redis Functions libraries, loaded and verified on every primary.

Layers, imports pointing down only (checked by ``tests/unit/test_layers.py``):

* ``library``, ``functions``, ``lint`` — the Lua library model (pure);
* ``redis/`` — connections, topology discovery, error classification and the sync engine (no Kubernetes);
* ``reconcile/`` — spec + sync result → status and conditions (no kopf);
* ``k8s/`` — kopf handlers (thin), settings, the object → engine-input translation;
* ``cli`` — the command-line tool over the same engine.
"""

__version__ = "0.1.0"
