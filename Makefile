# make demo: create .venv, install cnnkit, train ResNet-18 on the built-in synthetic textures,
#            evaluate the best checkpoint and list the tracked runs.
# make test: create .venv, install cnnkit with its test extras, lint (ruff), run the whole suite.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
CNNKIT := $(VENV)/bin/cnnkit
STAMP := $(VENV)/.installed

.PHONY: install demo lint test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(CNNKIT) train resnet18 --out runs/demo
	$(CNNKIT) eval runs/demo/weights/best.pt
	$(CNNKIT) runs --limit 5

lint: install
	$(VENV)/bin/ruff check cnnkit tests bench examples

test: install lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) runs mlflow.db mlartifacts .pytest_cache
