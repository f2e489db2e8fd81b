# eks-ca-remediator - the targets a newcomer expects. Every target installs what it needs first.
SHELL := /bin/bash
PYTHON ?= $(shell ls $$HOME/.pyenv/versions/3.13*/bin/python3.13 2>/dev/null | tail -n1 || true)
ifeq ($(PYTHON),)
PYTHON := $(shell command -v python3.13)
endif
VENV := .venv
SAMVENV := .venv-sam
CHKVENV := .venv-checkov
TRVENV := .venv-translator
PY := $(VENV)/bin/python
SAM := $(SAMVENV)/bin/sam
REGION ?= us-east-1
ENV ?= default
LAB_PACKAGES := containerd runc docker-registry shellcheck openssl ca-certificates tmux

.PHONY: setup test lint demo bench build deploy embed redrive clean

# The same import roots as pytest's `pythonpath` (pyproject.toml): the layer, each function, tools.
empty :=
space := $(empty) $(empty)
RUNPATH := $(subst $(space),:,layers/common $(wildcard functions/*) tools .)

$(VENV)/.installed: requirements-dev.txt layers/common/requirements.txt pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.13 not found: install it (pyenv install 3.13) or pass PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .  # the eks-ca-remediator command (status)
	touch $@

$(SAMVENV)/.installed:
	$(PYTHON) -m venv $(SAMVENV)
	$(SAMVENV)/bin/pip install --quiet aws-sam-cli==1.170.0
	touch $@

# checkov pins packages below requirements-dev.txt's, so it has a virtualenv of its own.
$(CHKVENV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHKVENV)
	$(CHKVENV)/bin/pip install --quiet -r requirements-checkov.txt
	touch $@

# SAM's translator for the IAM contract test (tests/fakes/iam_contract.py): it pins pydantic below
# the layer's pin, so it has a virtualenv of its own; the tests run it as a command.
$(TRVENV)/.installed: requirements-translator.txt
	$(PYTHON) -m venv $(TRVENV)
	$(TRVENV)/bin/pip install --quiet -r requirements-translator.txt
	touch $@

# The node lab needs containerd, runc and a registry from Debian; installed when we are root.
lab-packages:
	@missing=$$(for p in $(LAB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing node-lab packages: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "node lab unavailable (needs root + apt for: $$missing); its tests will skip"; fi; \
	fi

setup: $(VENV)/.installed $(TRVENV)/.installed lab-packages

test: setup
	$(PY) tools/ssm_document.py --check
	$(PY) -m pytest -q -n 2

lint: setup $(SAMVENV)/.installed $(CHKVENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff check --select C901 --config 'lint.mccabe.max-complexity = 10' layers/common/eks_ca_remediator/pull_failures.py
	$(VENV)/bin/ruff format --check .
	shellcheck --exclude SC1091,SC2034,SC2153,SC2154 node/remediate-ca.sh node/lib/*.sh  # each file (cross-module codes off)
	mkdir -p build && $(PY) tools/ssm_document.py --check --joined build/remediate-ca.joined.sh
	shellcheck build/remediate-ca.joined.sh  # the one script Run Command runs
	$(VENV)/bin/cfn-lint template.yaml member-account.yaml
	$(SAMVENV)/bin/python tools/sar_metadata.py --check
	PATH=$(dir $(PYTHON)):$$PATH $(SAM) validate --lint --region $(REGION)
	$(CHKVENV)/bin/python tools/transform_template.py -o build/cfn/template.json
	$(CHKVENV)/bin/python tools/quotas.py --translator  # quotas at 1-100 clusters, with the roles SAM writes
	cd build/cfn && ../../$(CHKVENV)/bin/checkov --config-file ../../.checkov.yaml -f template.json

demo: setup
	PYTHONPATH=$(RUNPATH) $(PY) -m demo

bench: setup
	PYTHONPATH=$(RUNPATH) $(PY) bench/run_all.py

embed: setup
	$(PY) tools/ssm_document.py

build: $(SAMVENV)/.installed embed
	PATH=$(dir $(PYTHON)):$$PATH $(SAM) build --region $(REGION)

deploy: build
	$(SAM) deploy --config-env $(ENV) --guided

# Replay the dead-letter queue of a deployed stack into its functions and queues (tools/redrive.py);
# DRY_RUN=1 only reports what each message is and where it would go.
redrive: setup
	@test -n "$(STACK)" || { echo "usage: make redrive STACK=<stack name> [REGION=...] [DRY_RUN=1]"; exit 1; }
	PYTHONPATH=$(RUNPATH) $(PY) tools/redrive.py --stack $(STACK) --region $(REGION) $(if $(DRY_RUN),--dry-run)

clean:
	rm -rf .aws-sam .pytest_cache .ruff_cache
