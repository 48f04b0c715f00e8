# Two commands do everything on a fresh machine:
#   make demo   — set up .venv if needed, then the GSCo recipe in miniature on real BreastMNIST
#   make test   — set up .venv if needed, then run the test suite (make test-fast: its fast tier)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_PATH ?= ../shared/data/medmnist
DEMO_OUT ?= outputs/demo
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast lint install system-packages bench clean

install: $(VENV)/.installed

# torch is pinned to the wheels this machine (and CI) can install; the rest comes from pyproject.toml. pip compiles
# each file's bytecode one after another; compileall over the environment and src/ on every core does the same work
# (syntax errors of files no one imports, which pip also skips, are not shown): set-up 54 s instead of 74 s here.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q --no-compile -e ".[dev]"
	@$(PY) -m compileall -qq -j 0 $$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") src \
	  || true
	@touch $@

# The GSCo recipe in miniature on the real BreastMNIST (~7 min on 2 CPU cores): two specialists of different
# architectures -> predictions + retrieval on the test and the training split -> case files; the tiny MedDr
# fine-tuned on training-split samples asked with the arms' prompts (hints included); every ablation arm on the test
# split. The generalist is a toy: real numbers need the MedDr checkpoint
# (MODEL=/path/to/meddr-hf bash inference_gsco.sh on the same case file).
# stem=default: timm's standard stems keep the specialists fast on a CPU (the preset's MedMNIST v2 stem is ResNet-only
# and ~5x slower; it is behind results/breastmnist_v2_resnet18_cifar.json).
# Shorter than the recipes, to keep the demo within 8 minutes: the specialists train 50 epochs (MedMNIST v2: 100; the
# learning rate drops at half and three quarters of them, as there) and the toy generalist 15 (finetune_tiny.yaml: 20;
# with 10 or 12 it still answered "normal or benign" to almost every plain question: 0.724 alone, below the majority
# answer's 0.731; with 15, 0.769, measured 2026-12-05 on the same case files).
SPECIALIST_EPOCHS ?= 50
MEDDR_EPOCHS ?= 15
# Each training case is asked HINTS_PER_CASE arms: the plain question (KEEP_ARMS) and others drawn at random. With
# two drawn at random (the plain question in a third of the cases) the toy learnt to copy the hints and read the
# image too little: generalist alone 0.705, below the majority answer's 0.731 (measured 2026-12-05).
HINTS_PER_CASE ?= 2
KEEP_ARMS ?= generalist
MILESTONES = $(shell echo $$(( $(SPECIALIST_EPOCHS) / 2 )),$$(( $(SPECIALIST_EPOCHS) * 3 / 4 )))
V2 := --config configs/specialists/medmnist_v2.yaml data_path=$(DATA_PATH) output_path=$(DEMO_OUT)/specialists \
	dataset=breastmnist stem=default epochs=$(SPECIALIST_EPOCHS) milestones=[$(MILESTONES)]
SPECIALISTS := resnet18 mobilenetv3_small_100
empty :=
space := $(empty) $(empty)
comma := ,
# $(call LIST,a b) -> a,b: the items of a YAML list on the command line
LIST = $(subst $(space),$(comma),$(strip $(1)))
RESULTS = $(foreach a,$(SPECIALISTS),$(DEMO_OUT)/specialists/breastmnist_28_endToEnd_$(a)_s9930641_$(1)results.json)
# The specialists train side by side, one thread each (on 2 cores: 0.69x the time of one after the other with two
# threads each, measured), each logging to $(DEMO_OUT)/logs/; a failure shows the end of its log. Each step leaves
# its files (the specialists a stamp named by their epochs): a second `make demo` with the same settings skips the
# steps already done, so `make demo MODEL=DIR` after a first demo only runs GSCo with that generalist.
SPECIALIST_THREADS ?= 1
TRAINED := $(DEMO_OUT)/specialists/.trained-$(SPECIALIST_EPOCHS)-epochs
CASES := $(DEMO_OUT)/gsco/breastmnist_cases.json
TRAIN_CASES := $(DEMO_OUT)/gsco/train/breastmnist_train_cases.json
HINT_SAMPLES := $(DEMO_OUT)/gsco/train/hint_samples.json
TOY := $(DEMO_OUT)/meddr/final
# MODEL=DIR: a generalist's folder (MedGemma, Qwen2.5-VL, InternVL3, LLaVA, ... or a converted MedDr) answers the
# arms instead of the toy, on the GPU if there is one, into $(DEMO_OUT)/gsco-<folder name>; no toy is trained.
MODEL ?=
ifeq ($(strip $(MODEL)),)
GENERALIST := $(TOY)
GSCO_OUT := $(DEMO_OUT)/gsco
GENERALIST_ARGS := device=cpu max_new_tokens=24 eval_batch_size=48
else
GENERALIST := $(MODEL)
GSCO_OUT := $(DEMO_OUT)/gsco-$(notdir $(patsubst %/,%,$(MODEL)))
GENERALIST_ARGS :=
endif

# GSCO_ARGS: more key=value settings for inference_gsco.sh, e.g. GSCO_ARGS="eval_batch_size=16 device_map=auto"
GSCO_ARGS ?=

demo: install $(GENERALIST)
	DATASET=breastmnist PYTHON=$(PY) MODEL=$(GENERALIST) CASES=$(CASES) OUT_DIR=$(GSCO_OUT) bash inference_gsco.sh \
		$(GENERALIST_ARGS) $(GSCO_ARGS)
	@echo "specialists (results, ROC/confusion PNGs, retrieval indexes): $(DEMO_OUT)/specialists/"
	@echo "case files and hint samples: $(DEMO_OUT)/gsco/"
	@echo "generalist: $(GENERALIST)"

$(TRAINED): | install
	@mkdir -p $(DEMO_OUT)/logs; pids=""; \
	for arch in $(SPECIALISTS); do \
	  log=$(DEMO_OUT)/logs/specialist_$$arch.log; echo "specialist $$arch: training, then predicting (log: $$log)"; \
	  ( export OMP_NUM_THREADS=$(SPECIALIST_THREADS); \
	    $(PY) -m gsco.specialists.train $(V2) architecture=$$arch && \
	    $(PY) -m gsco.specialists.predict $(V2) architecture=$$arch split=[test,train] ) > $$log 2>&1 & \
	  pids="$$pids $$!"; \
	done; failed=0; for pid in $$pids; do wait $$pid || failed=1; done; \
	if [ $$failed = 1 ]; then for arch in $(SPECIALISTS); do tail -n 20 $(DEMO_OUT)/logs/specialist_$$arch.log; done; \
	  exit 1; fi
	@touch $@

$(CASES): $(TRAINED)
	$(PY) -m gsco.collab.build_cases data_path=$(DATA_PATH) rad_k=10 specialists=[$(call LIST,$(call RESULTS,))] \
		cases=$@

$(TRAIN_CASES): $(TRAINED)
	$(PY) -m gsco.collab.build_cases data_path=$(DATA_PATH) rad_k=10 specialists=[$(call LIST,$(call RESULTS,train_))] \
		cases=$@

$(HINT_SAMPLES): $(TRAIN_CASES)
	$(PY) -m gsco.collab.hint_samples --config configs/gsco/breastmnist.yaml arms_per_case=$(HINTS_PER_CASE) \
		keep_arms=[$(call LIST,$(KEEP_ARMS))] cases=$< samples=$@

$(TOY): $(HINT_SAMPLES) $(CASES)
	GPUS=0 MODE=full PYTHON=$(PY) DATA=$< OUT_DIR=$(DEMO_OUT)/meddr bash train.sh epochs=$(MEDDR_EPOCHS) save_steps=100000

# a generalist folder given as MODEL= is used as it is (the case file is all it needs)
ifneq ($(strip $(MODEL)),)
$(MODEL): $(CASES)
endif

# Two pytest-xdist workers with one thread each, an idle one taking tests from the other's queue (worksteal): on 2
# cores the suite took 493 s against 724 s in one two-thread process (loadfile: 564 s); three workers were slower
# again (548 s against 523 s, 2026-12-04). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: install system-packages lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal tests

# ruff (pyproject.toml [tool.ruff]): pyflakes, pycodestyle and import order over everything Python here
lint: install
	$(PY) -m ruff check src tests bench demo.py

# The fast tier: tests not marked e2e (in one process, generated data; an unmarked test that starts a process or
# reads ../shared fails there, so the marks stay true).
test-fast: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal --fast tests

# What the suite needs beyond Python: Java (pycocoevalcap's PTB tokenizer and METEOR) and headless Chromium with its
# driver (the web app's browser test). Installed from Debian's packages when missing and this is root with apt-get;
# otherwise it stops at once with the one command to run.
SYSTEM_PACKAGES := default-jre-headless chromium chromium-driver
system-packages:
	@missing=; command -v java >/dev/null 2>&1 || missing=1; \
	{ command -v chromium || command -v chromium-browser; } >/dev/null 2>&1 || missing=1; \
	{ command -v chromedriver || test -x /usr/lib/chromium/chromedriver; } >/dev/null 2>&1 || missing=1; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $(SYSTEM_PACKAGES) (Java and headless Chromium for the tests)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null \
	      || { echo "error: could not install $(SYSTEM_PACKAGES)" >&2; exit 2; }; \
	  else \
	    echo "error: the tests need Java and headless Chromium with its driver; install them first:" >&2; \
	    echo "  sudo apt-get install -y $(SYSTEM_PACKAGES)" >&2; exit 2; \
	  fi; \
	fi

bench: install
	$(PY) bench/bench_retrieval.py
	$(PY) bench/bench_retrieval_scale.py
	$(PY) bench/bench_specialist.py
	$(PY) bench/bench_meddr_generation.py
	$(PY) bench/bench_convert_memory.py
	$(PY) bench/bench_quantization.py
	$(PY) bench/bench_prefix_sharing.py
	$(PY) bench/bench_prefix_sharing.py --tokenizer byte

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
