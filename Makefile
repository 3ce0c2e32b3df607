# Two set-up commands: `make run` (local control plane) and `make test` (everything the tests need, then the suite).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 7071
# The Python language worker (azure-functions-runtime) needs Python >= 3.13: pyenv's, else one on PATH.
PYTHON313 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13) $(shell command -v python3.13 2>/dev/null))

.PHONY: run test demo demo-serve bench schema clean mutation

$(PY):
	@$(PYTHON) -c 'import sys; sys.version_info[:2] == (3, 11) or sys.exit(f"Python 3.11 is required (Azure Functions \
	runtime), and $(PYTHON) is {sys.version.split()[0]}: install 3.11 and pass PYTHON=python3.11 (or its path)")'
	@echo "creating $(VENV) with $(PYTHON) (Python 3.11) ..."
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(PY)
	@echo "installing the runtime dependencies (requirements.txt, a few minutes the first time) ..."
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt clients/telemetry/pyproject.toml | $(PY)
	@echo "installing the test dependencies (requirements-dev.txt, several minutes the first time) ..."
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

# Debian's Chromium for the browser tests (Playwright drives the system browser; it downloads none).
/usr/bin/chromium:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# Infrastructure checks (Bicep parsing, checkov) in their own virtualenv: their pins never touch $(VENV).
# Pinned: a checkov release with new checks changes what `make test` demands of infra/.
.tools/checkov/bin/checkov:
	$(PYTHON) -m venv .tools/checkov
	.tools/checkov/bin/python -m pip install --quiet --upgrade pip
	.tools/checkov/bin/python -m pip install --quiet checkov==3.3.30 pycep-parser==0.5.1

# The Python language worker's own loader, to index the app as the Functions host's worker does (its checks
# refuse a whole app for one bad binding annotation). azure-functions stays on the app's major version (1.x).
.tools/worker/bin/python:
	@test -n "$(PYTHON313)" || { echo "Python 3.13 is needed for the worker-indexing test: install it (pyenv install 3.13) or pass PYTHON313=/path/to/python3.13" >&2; exit 1; }
	$(PYTHON313) -m venv .tools/worker
	.tools/worker/bin/python -m pip install --quiet --upgrade pip
	.tools/worker/bin/python -m pip install --quiet azure-functions-runtime==1.3.0 "azure-functions>=1.25,<2"

## run: start the control plane locally on http://127.0.0.1:$(PORT) (SQLite store, dry-run dispatch)
run: $(VENV)/.runtime
	@echo "starting the control plane (Ctrl-C stops it) ..."
	$(PY) -m controlplane serve --port $(PORT)

## test: install the test dependencies (Python packages, Azurite), lint, and run the whole suite
test: $(VENV)/.dev node_modules/.package-lock.json /usr/bin/chromium .tools/checkov/bin/checkov .tools/worker/bin/python
	$(VENV)/bin/ruff check .
	rm -rf test-artifacts/coverage
	$(PY) -m coverage run -m pytest
	$(PY) -m coverage combine -q
	$(PY) -m coverage html -q
	$(PY) -m coverage xml -q
	$(PY) -m coverage report

## demo: replay a realistic scenario against a fresh local host and print the decision timeline
# On the dev install: the retraining chapter runs the pipeline's steps, which train with scikit-learn.
demo: $(VENV)/.dev
	$(PY) -m controlplane demo --port $(PORT)

## demo-serve: serve the state the last `make demo` left in .controlplane/demo/ (its links open here)
demo-serve: $(VENV)/.runtime
	@test -f .controlplane/demo/demo.db || { echo "no demo state in .controlplane/demo/: run make demo first" >&2; exit 1; }
	CONTROLPLANE_STORE=sqlite:///.controlplane/demo/demo.db CONTROLPLANE_POLICY=.controlplane/demo/policy.yaml \
		$(PY) -m controlplane serve --port $(PORT)

## bench: figures beside baselines measured in the same run (table, and bench/results.json)
bench: $(VENV)/.dev node_modules/.package-lock.json
	$(PY) bench/run.py

## mutation: mutation testing of the rules, on a copy in mutants/ with one worker; report in test-artifacts/mutation.md
# MODULES="controlplane/domain/reviews.py ..." or SINCE=<git ref> narrows it; BUDGET (seconds) bounds it; FLOOR=85 fails
# the run when a module checked scores below it. Not part of `make test`: see docs/testing.md.
mutation: $(VENV)/.dev
	$(PY) .ci/mutation.py $(if $(MODULES),--modules $(MODULES),$(if $(SINCE),--since $(SINCE))) \
		--budget $(or $(BUDGET),3600) $(if $(FLOOR),--floor $(FLOOR))

## schema: regenerate policy.schema.json from the policy model
schema: $(VENV)/.runtime
	$(PY) -m controlplane policy schema > policy.schema.json

clean:
	rm -rf $(VENV) node_modules .controlplane .pytest_cache .hypothesis
