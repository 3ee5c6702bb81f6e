# `make run` and `make test` are the whole set-up on a fresh Debian machine (as root).
PYTHON ?= python3
VENV := .venv
EXP ?= experiments/io_uring.yaml
ARGS ?=
STAMP := $(VENV)/.installed
TOOLS_STAMP := $(VENV)/.test-tools

.PHONY: run test clean

run: $(STAMP)
	$(VENV)/bin/harness run $(EXP) $(ARGS)

test: $(STAMP) $(TOOLS_STAMP)
	$(VENV)/bin/pytest $(ARGS)

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
	$(VENV)/bin/pip install --quiet -e .
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info
