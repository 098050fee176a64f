# Two commands for a new user: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install -q -c constraints.txt
PLUGINS := plugins/lexical plugins/trialtype plugins/glove plugins/hflm plugins/cnn plugins/sae
STAMP  := $(VENV)/.installed
DEMO_DIR ?= demo_output

.PHONY: setup demo test lint bench bench-wholebrain bench-embedding clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt $(addsuffix /pyproject.toml,$(PLUGINS))
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip "setuptools>=68" wheel
	$(PIP) --no-build-isolation -e ".[test]" $(addprefix -e ,$(PLUGINS))
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/bids-encoding demo $(DEMO_DIR)

test: $(STAMP)
	$(BIN)/lint-imports
	HF_HUB_OFFLINE=1 MPLBACKEND=Agg $(BIN)/python -m pytest -n 2 -q

# Benchmarks print a ratio against a peer run in the same process (himalaya, scikit-learn, nilearn, naive loops);
# their peers are installed here, not by setup. The whole-brain fit and the embedders at scale take minutes: own targets.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) bench/requirements.txt
	$(PIP) -r bench/requirements.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/ridge.py --voxels 5000
	HF_HUB_OFFLINE=1 MPLBACKEND=Agg $(BIN)/python bench/searchlight.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/lm_features.py

bench-wholebrain: $(BENCH_STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/wholebrain.py

bench-embedding: $(BENCH_STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/embedding.py

lint: $(STAMP)
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) $(DEMO_DIR)
