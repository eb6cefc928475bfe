# Sluice — every target installs what it needs from the project's own files.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
#: the shared data folder the benchmarks read (SLUICE_DATA_DIR, else ../shared/data)
DATA   ?= $(or $(SLUICE_DATA_DIR),../shared/data)
KAFKA  := deploy/local/kafka
PYTEST_ARGS ?=
#: test processes (pytest-xdist; each test file runs in one): 1 runs them in this process
TEST_WORKERS ?= 3

.DEFAULT_GOAL := help
.PHONY: help install test demo lint package-check browser bench kafka-start kafka-stop clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# setuptools' editable install warns about folders named like the package: ours are mapped on
# purpose (`stream` -> `sluice.stream`), so the warning is noise for a newcomer.
PIP := PYTHONWARNINGS=ignore:Editable $(PY) -m pip install -q --disable-pip-version-check

#: the runtime package alone (what `make demo` needs: no compiler, no test tier)
$(VENV)/.runtime: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	@touch $@

#: and the extras and tools the tests, lint and benchmarks use (llama.cpp is built here, once)
$(VENV)/.installed: $(VENV)/.runtime
	$(PIP) -e '.[dev]'
	@touch $@

install: $(VENV)/.installed ## create .venv and install sluice with its dev dependencies

test: install ## start the local Kafka on empty data, run every test, stop Kafka (even when tests fail)
	@$(KAFKA) start --fresh
	@status=0; $(PY) -m pytest $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) \
	  $(PYTEST_ARGS) || status=$$?; $(KAFKA) stop; exit $$status

demo: $(VENV)/.runtime ## run the main job on bundled sample data (no broker, no API key, runtime only)
	$(VENV)/bin/sluice scan --demo

lint: install ## ruff, mypy (strict), and deploy/ checked: hadolint, Compose schema, manifests
	@mkdir -p build/typecheck/sluice
	@ln -sfn ../../../stream build/typecheck/sluice/stream
	@ln -sfn ../../../models build/typecheck/sluice/models
	$(VENV)/bin/ruff check stream models tests bench
	$(VENV)/bin/ruff format --check stream models tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint deploy/docker/Dockerfile
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml
	$(PY) -m pytest -q -p no:cacheprovider tests/test_deploy.py

package-check: ## build the wheel, install it into a fresh venv outside the checkout, scan the demo
	@rm -rf build/dist && mkdir -p build/dist
	$(PY) -m pip wheel -q --no-deps --wheel-dir build/dist .
	@dir=$$(mktemp -d); trap 'rm -rf "$$dir"' EXIT; \
	$(PYTHON) -m venv "$$dir/venv" && \
	"$$dir/venv/bin/pip" install -q build/dist/sluice-*.whl && \
	cd "$$dir" && "$$dir/venv/bin/sluice" scan --demo && \
	"$$dir/venv/bin/python" -c "import importlib.util as u, sys; \
	sys.exit(any(u.find_spec(n) for n in ('stream', 'models')))" && \
	echo "package-check: the wheel installs as sluice.stream and sluice.models and scans the demo"

browser: ## install Debian's chromium for the status page's browser test (as root, with apt-get)
	@command -v chromium >/dev/null 2>&1 || { \
	  test "$$(id -u)" = 0 || { echo "make browser: run as root, or install chromium yourself"; exit 1; }; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }
	@chromium --version

bench: install ## benchmarks that print figures (starts the local Kafka for the worker bench)
	$(PY) -m bench.filter
	$(PY) -m bench.analyst
	$(PY) -m bench.rca $(DATA)/nezha-onlineboutique/2022-08-22
	$(PY) -m bench.rca $(DATA)/nezha-trainticket/2023-01-29 \
	  --normal $(DATA)/nezha-trainticket/normal-2023-01-29
	$(PY) -m bench.loop
	$(PY) -m bench.formats
	@started=0; $(KAFKA) status >/dev/null 2>&1 || { $(KAFKA) start && started=1; }; \
	status=0; $(PY) -m bench.throughput && $(PY) -m bench.text_worker && $(PY) -m bench.otlp \
	  || status=$$?; \
	[ $$started = 1 ] && $(KAFKA) stop; exit $$status

kafka-start: ## start the local Kafka (deploy/local/kafka start)
	@$(KAFKA) start

kafka-stop: ## stop the local Kafka
	@$(KAFKA) stop

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
