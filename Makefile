# Two commands a newcomer needs: `make demo` and `make test`. Both create .venv and install what they need
# (the demo only the agent and the collector; the tests everything).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_STAMP := $(VENV)/.demo-stamp

.PHONY: demo test bench lint clean

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "custos needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(DEMO_STAMP): setup.cfg setup.py pyproject.toml agent/proxy/_framer.c agent/_chain.c agent/_be32.h | $(PY)
	$(PY) -m pip install --quiet -e '.[agent,collector]'
	@touch $@

$(STAMP): setup.cfg setup.py pyproject.toml agent/proxy/_framer.c agent/_chain.c agent/_be32.h | $(PY)
	$(PY) -m pip install --quiet -e '.[agent,collector,test,bench]'
	@touch $@ $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/custos demo $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
