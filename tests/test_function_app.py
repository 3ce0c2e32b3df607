"""The app module: a registry of blueprints that is cheap to import (cold start). What the host sees of its
bindings is asserted through the worker's own loader in ``test_worker_indexing``."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.support import ROOT


def test_importing_the_app_loads_nothing_heavy():
    probe = ("import sys, function_app; "
             "print(','.join(m for m in ('evidently', 'pandas', 'azure.ai.ml', 'azure.data.tables', 'pydantic', "
             "'yaml', 'numpy', 'scipy', 'opentelemetry', 'azure.monitor.opentelemetry') if m in sys.modules))")
    # Telemetry configured as in Azure changes nothing: the first invocation installs it, not the import.
    env = {**os.environ, "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=0"}
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True,
                            env=env)
    assert loaded.stdout.strip() == ""


def test_function_app_only_registers_blueprints():
    source = (ROOT / "function_app.py").read_text()
    assert "def " not in source and "register_blueprint" in source
