"""Event-driven MLOps control plane for Azure Machine Learning.

The package holds the domain (events, parsing, policy, decisions), the ports and their adapters, the
settings, the composition root, the local host and the command line. Azure Functions bindings live in
``triggers/`` and use cases in ``controlplane/handlers/``.
"""
