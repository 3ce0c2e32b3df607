"""The Azure Functions app: creates it and registers one blueprint per module in ``triggers/``.

Nothing heavy is imported here; see ``controlplane.bootstrap`` for what is built on first use.
"""
import azure.functions as func

from triggers import alerts, decisions, health, lists, models, registry, reports, reviews, sweep, telemetry

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

for module in (registry, telemetry, alerts, decisions, models, health, sweep, reviews, reports, lists):
    app.register_blueprint(module.bp)
