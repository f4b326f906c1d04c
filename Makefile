# fertool's two commands: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch/torchvision are installed first and on their own: these releases install from this
# project's build machines' local disk; override on yours, e.g. `make test TORCH="torch torchvision"`.
TORCH  ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed
DEMO   := demo-out
FERTOOL := $(BIN)/fertool

.PHONY: install demo test test-all clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The whole chain on built-in synthetic faces, into demo-out/ (a few minutes on 2 CPU cores).
demo: $(STAMP)
	mkdir -p $(DEMO)
	$(FERTOOL) prepare --synthetic 3000 -o $(DEMO)/data.safetensors
	$(FERTOOL) train-branch $(DEMO)/data.safetensors -o $(DEMO)/branch1.safetensors --seed 1 --epochs 6 --lr 1e-3 --log $(DEMO)/branch1.jsonl
	$(FERTOOL) eval $(DEMO)/data.safetensors $(DEMO)/branch1.safetensors --split val -o $(DEMO)/preds.npz
	@echo "demo: artifacts in $(DEMO)/"

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Also the slow tests (full-size runs); not part of CI.
test-all: $(STAMP)
	$(BIN)/python -m pytest -q --run-slow

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
