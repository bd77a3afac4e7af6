# Two commands do all the set-up on a fresh machine (see README.md):
#   make demo   train, predict and evaluate on the small ISBI 2012 sample shipped in the repo
#   make test   run the test suite
# Both create .venv and install the project into it first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# CPU build of PyTorch first, so the project's torch requirement is already met
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# elasticdeform's published wheel is built against NumPy 1.x: compile it against NumPy 2
	$(BIN)/python -m pip install --quiet --no-binary elasticdeform -e ".[test,export]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/unet demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
