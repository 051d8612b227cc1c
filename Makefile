# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing and
# install exactly the versions of the lock (requirements/lock-py311.txt, from `make lock`).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYVER := $(shell $(PYTHON) -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
LOCK ?= requirements/lock-py$(PYVER).txt
# pip's constraints: the lock where one exists for this Python, else the newest releases allowed
LOCKED = $(if $(wildcard $(LOCK)),-c $(LOCK),)
# the adapter and core tests that `make test-newest` and `make test-oldest` run
CORE_TESTS ?= tests/test_adapters_torchvision.py tests/test_adapters_timm.py tests/test_adapters_timm_more.py \
	tests/test_adapters_transformers.py tests/test_adapters_transformers_read.py \
	tests/test_adapters_transformers_signatures.py tests/test_units.py tests/test_lesion.py \
	tests/test_attribution.py tests/test_interventions.py tests/test_graph.py
PIP_TOOLS ?= pip-tools==7.7.0

.PHONY: demo test test-all install docs lock test-newest test-oldest clean

$(STAMP): setup.cfg pyproject.toml $(wildcard $(LOCK))
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@$(if $(LOCKED),,echo "note: no lock for Python $(PYVER) ($(LOCK)); installing the newest releases setup.cfg allows")
	$(PY) -m pip install --quiet $(LOCKED) -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# the default suite (a few minutes on 2 cores); `make test-all` and .ci/run add the slow end-to-end runs
test: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest -q -m "not slow"

test-all: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/unravel demo

DOCS_STAMP := $(VENV)/.docs-installed

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet $(LOCKED) -e ".[docs]"
	touch $(DOCS_STAMP)

# the site, offline, with warnings as errors; the gallery runs its examples
docs: $(DOCS_STAMP)
	MPLBACKEND=Agg $(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

# regenerate the lock from setup.cfg (every extra) and requirements/pins.txt, at the newest
# releases they allow; then `make test` and commit both
lock:
	test -x .venv-lock/bin/pip-compile || ($(PYTHON) -m venv .venv-lock && .venv-lock/bin/python -m pip install --quiet "$(PIP_TOOLS)")
	CUSTOM_COMPILE_COMMAND="make lock" .venv-lock/bin/pip-compile --quiet --upgrade --strip-extras \
		--no-emit-index-url --no-emit-find-links -c requirements/pins.txt \
		--extra test --extra docs --extra vision --extra timm --extra hf --output-file $(LOCK) setup.cfg

# the newest releases of everything setup.cfg allows (upgraded eagerly, in their own venv), for the
# adapter and core tests; `make test-newest NEWEST="transformers==5.26.0"` tries a release past a cap
# (raise the cap in setup.cfg first: docs/howto/coverage.md)
test-newest:
	test -x .venv-newest/bin/python || $(PYTHON) -m venv .venv-newest
	.venv-newest/bin/python -m pip install --quiet --upgrade pip
	.venv-newest/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[test]" $(NEWEST)
	.venv-newest/bin/python -m pip list --format=freeze | grep -iE '^(torch|torchvision|timm|transformers|numpy)=='
	MPLBACKEND=Agg .venv-newest/bin/python -m pytest -q -m "not slow" $(CORE_TESTS)

# the lowest version of each direct requirement that setup.cfg allows (tools/lowest.py; transitive
# ones at their newest, as uv's --resolution lowest-direct), in a fresh venv, for the same tests
test-oldest:
	rm -rf .venv-oldest && $(PYTHON) -m venv .venv-oldest
	$(PYTHON) tools/lowest.py test > .venv-oldest/lowest.txt
	.venv-oldest/bin/python -m pip install --quiet --upgrade pip
	.venv-oldest/bin/python -m pip install --quiet -c .venv-oldest/lowest.txt -e ".[test]"
	.venv-oldest/bin/python -m pip list --format=freeze | grep -iE '^(torch|torchvision|timm|transformers|numpy)=='
	MPLBACKEND=Agg .venv-oldest/bin/python -m pytest -q -m "not slow" $(CORE_TESTS)

clean:
	rm -rf $(VENV) .venv-lock .venv-newest .venv-oldest build *.egg-info docs/_build docs/auto_examples
