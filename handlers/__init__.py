"""Use cases: one module per thing the control plane does. Handlers reach the outside world only
through the ports in ``controlplane.ports`` and never import an Azure SDK."""
