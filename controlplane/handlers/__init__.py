"""Use cases: one module per thing the control plane does. Handlers reach the outside world only
through the ports in ``controlplane.ports.store`` and never import an Azure SDK."""
