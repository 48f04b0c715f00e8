# Two commands do everything on a fresh machine:
#   make demo   — set up .venv if needed, then train + evaluate a ResNet-18 specialist on real BreastMNIST
#   make test   — set up .venv if needed, then run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_PATH ?= ../shared/data/medmnist
DEMO_OUT ?= outputs/demo
# timm's ImageNet stem keeps the demo at ~2 minutes on 2 CPU cores; DEMO_STEM=cifar runs the preset's own
# MedMNIST v2 stem (~12 minutes, the architecture behind results/breastmnist_v2_resnet18_cifar.json).
DEMO_STEM ?= default
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test install bench clean

install: $(VENV)/.installed

# torch is pinned to the wheels this machine (and CI) can install; the rest comes from pyproject.toml.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

demo: install
	$(PY) -m gsco.specialists.train --config configs/specialists/medmnist_v2.yaml \
		data_path=$(DATA_PATH) output_path=$(DEMO_OUT) dataset=breastmnist architecture=resnet18 stem=$(DEMO_STEM)
	CONFIG=configs/specialists/medmnist_v2.yaml PYTHON=$(PY) bash inference_specialist.sh \
		data_path=$(DATA_PATH) output_path=$(DEMO_OUT) dataset=breastmnist architecture=resnet18 stem=$(DEMO_STEM)

test: install
	$(PY) -m pytest -q tests

bench: install
	$(PY) bench/bench_retrieval.py
	$(PY) bench/bench_specialist.py
	$(PY) bench/bench_meddr_generation.py
	$(PY) bench/bench_convert_memory.py

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
