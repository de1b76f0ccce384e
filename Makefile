# Two commands do all set-up on a fresh machine:
#   make app   - install into .venv if needed and serve the Voila app on http://127.0.0.1:8866
#   make test  - install what the tests need (Chromium too, when run as root), lint (ruff, mypy) and run every test
#   make workshop - serve the workshop notebooks (apps/workshop) as a Voila page list on http://127.0.0.1:8867
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 8866
WORKSHOP_PORT ?= 8867
WORKSHOP_POOL ?= 0

.PHONY: app workshop test lint install chromium bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else echo "Chromium is missing: run 'sudo apt-get install -y chromium' for the browser tests"; fi; \
	fi

app: $(STAMP)
	JUPYTER_PATH=$(CURDIR)/apps/jupyter $(VENV)/bin/voila apps/studio.ipynb --no-browser --port=$(PORT) --Voila.ip=127.0.0.1 \
	  --template=studio --preheat_kernel=True --pool_size=1 \
	  --MappingKernelManager.cull_idle_timeout=900 --MappingKernelManager.cull_interval=60 \
	  --Voila.tornado_settings="{'websocket_max_message_size': 209715200}" \
	  --VoilaConfiguration.file_allowlist="['downloads/[0-9a-f]{32}/[A-Za-z0-9_.-]+']"

workshop: $(STAMP)
	JUPYTER_PATH=$(CURDIR)/apps/jupyter $(VENV)/bin/voila apps/workshop --no-browser --port=$(WORKSHOP_PORT) --Voila.ip=127.0.0.1 \
	  --template=studio --MappingKernelManager.cull_idle_timeout=900 --MappingKernelManager.cull_interval=60 \
	  --Voila.tornado_settings="{'websocket_max_message_size': 209715200}" \
	  --VoilaConfiguration.file_allowlist="['downloads/[0-9a-f]{32}/[A-Za-z0-9_.-]+']" \
	  $(if $(filter-out 0,$(WORKSHOP_POOL)),--preheat_kernel=True --pool_size=$(WORKSHOP_POOL))

test: $(STAMP) chromium lint
	$(PY) -m pytest

# ruff (rules in pyproject.toml) over the repository; mypy: strict on studio/engine, the rest of studio/ non-strict
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) .pytest_cache
