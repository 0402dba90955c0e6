# Two commands on a fresh machine: `make demo` and `make test`. Both set up first.
VENV ?= .venv
TLKIT := $(VENV)/bin/tlkit
PYTEST := $(VENV)/bin/pytest

.PHONY: setup demo test test-fast contract clean

setup:
	./scripts/setup.sh

demo: setup
	$(TLKIT) plan examples/quickstart.yaml

test: setup
	$(PYTEST)

test-fast: setup
	$(PYTEST) -m "not packaged"

contract: setup
	../shared/checks/contract

clean:
	rm -rf $(VENV) runs .pytest_cache
