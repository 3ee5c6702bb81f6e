# `make run` and `make test` are the whole set-up on a fresh Debian machine (as root).
PYTHON ?= python3
VENV := .venv
EXP ?= experiments/io_uring.yaml
ARGS ?=
STAMP := $(VENV)/.installed
TOOLS_STAMP := $(VENV)/.test-tools

.PHONY: run test lint clean

run: $(STAMP)
	$(VENV)/bin/harness run $(EXP) $(ARGS)

# Lint first: a finding fails `make test` before any test runs.
test: lint $(TOOLS_STAMP)
	$(VENV)/bin/pytest $(ARGS)

# Every linter runs, so one pass shows all findings; any finding fails the target.
# Configured in pyproject.toml ([tool.ruff]) and .ansible-lint; ansible-lint wants the
# venv's tools (ansible-playbook) first on PATH.
lint: $(STAMP)
	@status=0; \
	$(VENV)/bin/ruff check || status=1; \
	$(VENV)/bin/ruff format --check || status=1; \
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/ansible-lint || status=1; \
	exit $$status

# The system tools the tests call (Chromium, clang, nftables, iperf3, ...), installed by the
# harness's own playbook; again whenever the playbook changes.
$(TOOLS_STAMP): playbooks/test_tools.yml | $(STAMP)
	$(VENV)/bin/ansible-playbook -i localhost, -e ansible_python_interpreter=/usr/bin/python3 playbooks/test_tools.yml
	touch $(TOOLS_STAMP)

# Python's venv module is a separate Debian package; install it when missing.
$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV) 2>/dev/null || { apt-get update && apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); }

$(STAMP): $(VENV)/bin/python pyproject.toml
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info .ruff_cache .ansible
