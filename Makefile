# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The exact runtime set the tests run and every Azure ML image build installs (environments/lock.py).
LOCK := environments/requirements.txt

.PHONY: demo test specs bundle lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the package metadata or the lock changes.
$(VENV)/.installed: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[azure]" -c $(LOCK)
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]" -c $(LOCK)
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/designer-resnet demo

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

# Regenerate both flavours of every component spec (and the typed pipeline) from src/designer_resnet/components/*.yaml.
specs: $(VENV)/.installed
	$(BIN)/python components/generate.py

# Folders the studio's "Upload from folder" takes (one per component, `code: .`), and the pipeline components
# by reference: build/bundle/ (see README, "Using the components in the designer").
bundle: $(VENV)/.installed
	$(BIN)/python components/bundle.py --output build/bundle

# Move the lock to the newest releases: upgrade the dev environment, write the lock from it,
# regenerate the specs. Then run `make test`: the lock is what the tests ran.
lock: $(BIN)/python
	$(BIN)/pip install --quiet --upgrade --upgrade-strategy eager -e ".[dev]"
	$(BIN)/python environments/lock.py
	$(BIN)/python components/generate.py
	touch $(VENV)/.installed-dev $(VENV)/.installed

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
