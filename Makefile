# Two commands for a newcomer: `make demo` and `make test`. Both build .venv once and reuse it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench zoo venv clean

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

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]' || true
	$(PY) benchmarks/trf_speed.py

# Opt-in, not part of `make test`: every timm and torchvision model through the TRF engine
# (timm: under 10 minutes on 2 quiet cores), then docs/zoo.md from the two sweeps.
zoo: $(STAMP)
	mkdir -p out
	$(VENV)/bin/rflens zoo timm -o out/zoo-timm.json
	$(VENV)/bin/rflens zoo torchvision -o out/zoo-torchvision.json
	$(VENV)/bin/rflens zoo --from out/zoo-timm.json out/zoo-torchvision.json --markdown docs/zoo.md

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
