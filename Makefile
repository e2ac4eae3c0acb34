# waste-edge: `make test` is the README's (and CI's) test command.
PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
SHIM := ../shared/env/torchvision_cpu_shim.py
EXTRAS ?= all
PYTEST_ARGS ?=

.PHONY: test install clean

$(VENV)/.installed-$(EXTRAS): pyproject.toml constraints.txt
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	@# Environment-only fix (../shared/env/README.md): a CPU torch next to a CUDA torchvision build
	@# needs two fake op schemas before `import torchvision`. Product code never imports the shim.
	@if ! $(VPY) -c "import torchvision" >/dev/null 2>&1 && [ -f $(SHIM) ]; then \
	  site=$$($(VPY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	  cp $(SHIM) $$site/ && echo "import torchvision_cpu_shim" > $$site/torchvision_cpu_shim.pth; \
	  echo "installed torchvision CPU shim into $(VENV)"; fi
	touch $@

install: $(VENV)/.installed-$(EXTRAS)

test: install
	OMP_NUM_THREADS=2 $(VPY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
