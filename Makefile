# Two commands for a newcomer: `make demo` and `make test`. Both build .venv once and reuse it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench soak properties zoo experiments experiments-quick venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rflens trf torchvision:resnet18 --input 3x224x224 --layers 'conv1' 'maxpool' 'layer?' 'output'
	$(VENV)/bin/rflens report torchvision:resnet18 --input 3x224x224 --erf-layers layer1 layer2 layer3 -o out/resnet18-report.html

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

# Opt-in soak: RFLENS_SOAK random programs (default 10000) against the gradient oracle, on
# RFLENS_SOAK_JOBS processes (default 2), seeds from RFLENS_SOAK_START (default 0); writes
# out/soak/summary.{md,json}. Fails when any program gets a silent wrong answer. See docs/soak.md.
soak: $(STAMP)
	PYTHONPATH=src $(PY) tests/soak.py --count $${RFLENS_SOAK:-10000} --start $${RFLENS_SOAK_START:-0} \
		--jobs $${RFLENS_SOAK_JOBS:-2} --out out/soak

properties: $(STAMP)
	RFLENS_PROPERTY_EXAMPLES=500 $(PY) -m pytest -n 2 -q tests/test_erf_properties.py

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]' || true
	$(PY) benchmarks/trf_speed.py

# Opt-in, not part of `make test`: every experiment in full (the multi-seed training ones take a few
# minutes each on 2 cores; wall times in docs/experiments.md), writing the figures and JSON the docs show.
experiments: $(STAMP)
	$(VENV)/bin/rflens experiment all --workers 2 -o docs/images/experiments

# The same in quick mode (fewer samples and epochs; wiring only, its numbers are not the documented ones).
experiments-quick: $(STAMP)
	$(VENV)/bin/rflens experiment all --quick -o out/experiments-quick

# Opt-in, not part of `make test`: every timm and torchvision model through the TRF engine
# (timm: under 10 minutes on 2 quiet cores), then docs/zoo.md from the two sweeps.
zoo: $(STAMP)
	mkdir -p out
	$(VENV)/bin/rflens zoo timm -o out/zoo-timm.json
	$(VENV)/bin/rflens zoo torchvision -o out/zoo-torchvision.json
	$(VENV)/bin/rflens zoo --from out/zoo-timm.json out/zoo-torchvision.json --markdown docs/zoo.md

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
