# waste-edge: `make test` is the README's (and CI's) test command.
PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
SHIM := ../shared/env/torchvision_cpu_shim.py
EXTRAS ?= all
PYTEST_ARGS ?=

.PHONY: test test-arm64 install demo default-model bench clean

$(VENV)/.installed-$(EXTRAS): pyproject.toml constraints.txt
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	@# Environment-only fix (../shared/env/README.md): a CPU torch next to a CUDA torchvision build
	@# needs two fake op schemas before `import torchvision`. Product code never imports the shim; a hook
	@# loads it on the first `import torchvision`, so torch-free processes stay torch-free.
	@if ! $(VPY) -c "import torchvision" >/dev/null 2>&1 && [ -f $(SHIM) ]; then \
	  site=$$($(VPY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	  cp $(SHIM) scripts/env/torchvision_shim_hook.py $$site/ && echo "import torchvision_shim_hook" > $$site/torchvision_cpu_shim.pth; \
	  echo "installed torchvision CPU shim into $(VENV)"; fi
	touch $@

install: $(VENV)/.installed-$(EXTRAS)

test: install
	OMP_NUM_THREADS=2 $(VPY) -m pytest -q $(PYTEST_ARGS)

# linux/arm64 (Raspberry Pi 4/5, Jetson) under emulation: as root, build or reuse the Debian bookworm arm64 root
# (scripts/arm64.sh, cached in .arm64/), install this checkout's wheel with the [serve] extra, then compare predict,
# info, camera and serve with the host on the shipped default model (tests/arm64). Emulated: no speed figures.
test-arm64: install
	scripts/arm64.sh setup --extra serve
	WASTE_EDGE_ARM64=1 OMP_NUM_THREADS=2 $(VPY) -m pytest -q -s -p no:cacheprovider tests/arm64 $(PYTEST_ARGS)

# The main job on the embedded default model. From a fresh clone: a .venv with the base package only
# (numpy, onnxruntime, opencv-python-headless, pillow, tqdm; no torch), then camera 0 or a generated video.
demo:
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -c "import waste_edge.runtime.classifier" 2>/dev/null || $(VPY) -m pip install -q -e .
	$(VENV)/bin/waste-edge demo --out demo-out

# Rebuild waste_edge/models/default.onnx and default.json from pinned inputs (needs ../shared/data/waste-sample).
default-model: install
	$(VPY) scripts/build_default_model.py

# Reproduce benchmarks/README.md's tables (CPU; GPU rows only where a CUDA GPU exists).
bench: install
	$(VPY) benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info demo-out
