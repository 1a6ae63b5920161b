# The README's two commands are `make demo` and `make test`; each does its own set-up.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv engine podman images browser demo test bench clean gc

venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,inspect,ray]'
	touch $(STAMP)

# Start a Docker engine only where none answers (installs Debian's docker.io + runsc).
engine:
	bash scripts/ensure-engine.sh

# Podman, the second engine (PYGENT_BACKEND=podman): installs it where missing and serves
# its Docker-compatible API at /run/pygent-podman.sock. The tests start it themselves too.
podman:
	bash scripts/ensure-podman.sh

# The build tools (static busybox/bash, debootstrap) are installed here, not by the CLI.
images: venv engine
	bash scripts/ensure-build-deps.sh
	$(BIN)/pygent-runner images build

# Headless Chromium + ChromeDriver for the `view` browser tests (Debian packages, where missing).
browser:
	bash scripts/ensure-browser.sh

demo: images
	$(BIN)/python examples/demo.py

test: images browser
	$(BIN)/pytest

bench: images
	$(BIN)/python -m bench $(BENCH_ARGS)

gc: venv
	$(BIN)/pygent-runner gc

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info runner/*.egg-info
