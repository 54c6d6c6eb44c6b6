# nbscale: the three commands of the README (`make lab`, `make test`, `make demo`) do all set-up.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Re-install only when what the venv is made from changes (the fast path of `make test`).
STAMP := $(VENV)/.nbscale-installed
LAB_PORT ?= 8888
DEMO_OUT ?= build/demo
ALLOW_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: setup lab labextension test test-fast test-py312 demo notebooks lock clean check-tools
LABEXT := lib/nbscale/labextension

setup: $(STAMP)

check-tools:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "nbscale: $(PYTHON) not found: install Python 3.11 (or run make PYTHON=/path/to/python3.11)." >&2; exit 1; }
	@java=$${JAVA_HOME:+$$JAVA_HOME/bin/}java; \
	 major=$$("$$java" -version 2>&1 | sed -n 's/.*version "\(1\.\)\{0,1\}\([0-9]*\).*/\2/p' | head -1); \
	 [ -n "$$major" ] && [ "$$major" -ge 17 ] || { echo "nbscale: Spark needs Java 17+ and found $${major:-none}: install it (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) or set JAVA_HOME." >&2; exit 1; }

$(STAMP): pyproject.toml constraints.txt kernels/nbscale-local/kernel.json kernels/nbscale-cluster/kernel.json jupyter-config/nbscale.json | check-tools
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip==25.3
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	$(BIN)/jupyter kernelspec install --sys-prefix --replace --log-level=WARN kernels/nbscale-local
	$(BIN)/jupyter kernelspec install --sys-prefix --replace --log-level=WARN kernels/nbscale-cluster
	mkdir -p $(VENV)/etc/jupyter/jupyter_server_config.d
	cp jupyter-config/nbscale.json $(VENV)/etc/jupyter/jupyter_server_config.d/nbscale.json
	touch $@
	@echo "nbscale: set up in $(VENV)"

# The JupyterLab panel is committed built (installs need no Node.js); rebuilt here only when the
# sources differ from the ones it was built from (a content hash: git checkouts scramble mtimes).
labextension: setup
	@hash=$$(cat extension/package.json extension/yarn.lock extension/src/*.ts extension/style/*.css extension/schema/*.json extension/install.json | sha1sum | cut -c1-40); \
	 if [ "$$(cat $(LABEXT)/.source-sha1 2>/dev/null)" != "$$hash" ]; then \
	   echo "nbscale: building the JupyterLab panel (extension/ changed)"; \
	   cd extension && PATH="$(CURDIR)/$(BIN):$$PATH" jlpm install && PATH="$(CURDIR)/$(BIN):$$PATH" jlpm build && cd .. && \
	   echo "$$hash" > $(LABEXT)/.source-sha1 && $(BIN)/python -m pip install -q --no-deps -e . ; \
	 fi

lab: setup labextension
	$(BIN)/jupyter lab --notebook-dir=notebooks --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) --no-browser $(ALLOW_ROOT)

# The whole suite in one run on three workers (on two cores: much of a test is waiting on a JVM, a kernel or a server,
# and a third worker fills those waits; 35:01 -> 33:50 measured): unit and integration tests (real Spark, MLflow, kernels; each module
# on one worker, longest first: conftest.py orders them, and --no-loadscope-reorder keeps xdist from re-sorting them
# by test count), then the notebooks via nbval (a notebook's cells stay on one worker, in order, each notebook on a
# fresh data dir), handed out as workers free up so none idles between the two (conftest.py).
test: setup
	$(BIN)/python -m pytest --nbval --nbval-sanitize-with tests/nbval-sanitize.cfg -n 3 --dist loadfile --no-loadscope-reorder --durations=30 tests notebooks

# What a developer runs while working: no Spark-heavy suites, no notebooks.
test-fast: setup
	$(BIN)/python -m pytest -p no:nbval -m "not slow" tests

# Python 3.12 beside the main 3.11: the same locked set installed in a second venv, then the fast layer and the
# quickstart (ingest, train, register, serve, predict) under nbval on it. CI runs it after `make test`.
PYTHON312 ?= $(shell for p in python3.12 $(HOME)/.pyenv/versions/3.12*/bin/python3.12; do "$$p" -c '' 2>/dev/null && { command -v "$$p"; break; }; done)
VENV312 := build/venv-py312
test-py312:
	@[ -n "$(PYTHON312)" ] || { echo "nbscale: no python3.12 found: install Python 3.12 (or run make test-py312 PYTHON312=/path/to/python3.12)." >&2; exit 1; }
	test -x $(VENV312)/bin/python || $(PYTHON312) -m venv $(VENV312)
	$(VENV312)/bin/python -m pip install -q --upgrade pip==25.3
	$(VENV312)/bin/python -m pip install -q -c constraints.txt -e '.[test]'
	$(VENV312)/bin/python -m pytest -p no:nbval -m "not slow" -q tests
	$(VENV312)/bin/python -m pytest -q --nbval --nbval-sanitize-with tests/nbval-sanitize.cfg --nbval-kernel-name python3 notebooks/00-quickstart.ipynb

demo: setup
	mkdir -p $(DEMO_OUT)
	$(BIN)/jupyter nbconvert --to notebook --execute notebooks/00-quickstart.ipynb --output-dir $(DEMO_OUT) --ExecutePreprocessor.kernel_name=nbscale-local --ExecutePreprocessor.timeout=600
	$(BIN)/jupyter nbconvert --to html $(DEMO_OUT)/00-quickstart.ipynb --output-dir $(DEMO_OUT) >/dev/null
	@echo "Executed notebook: $(DEMO_OUT)/00-quickstart.ipynb"
	@echo "HTML page:         $(DEMO_OUT)/00-quickstart.html"
	@echo "Data directory:    $$($(BIN)/python -c 'import nbscale; print(nbscale.settings().data_dir)')"

# Re-execute the tutorials in place, each on a fresh data dir as nbval will (they are committed with
# their outputs, which nbval compares).
notebooks: setup
	for nb in notebooks/*.ipynb; do NBSCALE_DATA_DIR=$$(mktemp -d) $(BIN)/jupyter nbconvert --to notebook --execute --inplace --allow-errors \
	  --ExecutePreprocessor.record_timing=False --ExecutePreprocessor.store_widget_state=False --ExecutePreprocessor.timeout=1200 "$$nb" || exit 1; done

# Re-resolve the full set from pyproject.toml's pins into constraints.txt (run after changing a pin).
lock: | check-tools
	rm -rf build/lock-venv
	$(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/python -m pip install -q --upgrade pip==25.3
	build/lock-venv/bin/python -m pip install -q -e '.[test]'
	( echo "# Full resolved set for pyproject.toml's pins (make lock). Python 3.11, Linux x86_64."; \
	  build/lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^nbscale' ) > constraints.txt
	rm -rf build/lock-venv

clean:
	rm -rf $(VENV) build .pytest_cache
