"""Azure Functions bindings: one blueprint per module, registered by ``function_app.py``.

This is the only package that imports ``azure.functions``. A trigger turns its binding into plain
data, calls a handler, and turns the outcome into the binding's answer: a status code, a raise for
the host to retry (transient errors), or a recorded ``invalid`` decision (permanent ones).
Handlers are imported inside the functions so that loading the app stays cheap (cold start).
"""
