# Two commands matter: `make run` and `make test`. Both set everything up first.
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck importlint envtest containers unit bench crds clean help

help:
	@echo "make run    set up, then serve examples/jq-bot with clrk dev on :18080"
	@echo "make test   set up, then ruff, mypy --strict, import-linter and pytest"

install: $(STAMP)
	@hack/system-deps.sh

$(STAMP): pyproject.toml runtime/pyproject.toml hack/find-python.sh
	@py=$$(hack/find-python.sh) || exit 1; \
	  [ -x $(BIN)/python ] || { echo "==> creating $(VENV) with $$py"; "$$py" -m venv $(VENV); }
	@echo "==> installing clrk-runtime (runtime/), clrk and its dev dependencies into $(VENV)"
	@$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e ./runtime -e '.[dev]'
	@# An older venv's clrk owned the clrk-shim script: put it back if that uninstall took it.
	@[ -x $(BIN)/clrk-shim ] || $(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --force-reinstall -e ./runtime
	@# The Claude Code CLI comes inside the pinned claude-agent-sdk wheel; put it on the venv's PATH.
	@ln -sf "$$($(BIN)/python -c 'import claude_agent_sdk, pathlib; print(pathlib.Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude")')" $(BIN)/claude
	@$(BIN)/claude --version >/dev/null
	@touch $(STAMP)

run: install
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/clrk dev --apply examples/jq-bot/manifests \
	  --secret anthropic-credentials=ANTHROPIC_API_KEY:api-key --port 18080

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

importlint: install
	$(BIN)/lint-imports

envtest:
	@hack/envtest.sh --check >/dev/null 2>&1 || { echo "==> building kube-apiserver and etcd for the cluster test tier (once per machine, ~4 min)"; hack/envtest.sh >/dev/null || echo "warning: kube-apiserver could not be built here: tests/integration/cluster will skip, saying why"; }

containers:
	@hack/containers.sh --check >/dev/null 2>&1 || { echo "==> podman, buildah and base images for the container test tier (once per machine, ~80 s)"; hack/containers.sh || echo "warning: the container tier could not be set up here: tests/containers will skip, saying why"; }

unit: install envtest containers
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest

test: lint typecheck importlint unit

bench: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python hack/bench_shim.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python hack/bench_egress.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python hack/bench_jq_bot.py

crds: install
	$(BIN)/python hack/write-crds.py

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache
