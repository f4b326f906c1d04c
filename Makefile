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

.PHONY: install demo test test-all completions docs clean

install: $(STAMP)

# --no-cache-dir: otherwise pip also keeps a copy of every wheel (GBs for torch) in ~/.cache,
# and a nearly full disk fails the install (a CI run ended that way).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-cache-dir --upgrade pip
	$(BIN)/python -m pip install --quiet --no-cache-dir $(TORCH)
	$(BIN)/python -m pip install --quiet --no-cache-dir -e ".[dev]"
	touch $(STAMP)

# The whole chain on built-in synthetic faces, into demo-out/ (a few minutes on 2 CPU cores).
# dexpression_bn: the paper's LRN model needs far more steps to leave chance than a demo has.
# The report's Adam at a constant 1e-3: five epochs of 2,700 faces are too few for a schedule.
DEMO_TRAIN := --recipe report --arch dexpression_bn --epochs 5 --lr 1e-3 --batch-size 32 --no-augment
demo: $(STAMP)
	mkdir -p $(DEMO)
	$(FERTOOL) prepare --synthetic 3000 -o $(DEMO)/data.safetensors
	for seed in 1 2 3; do \
	  $(FERTOOL) train-branch $(DEMO)/data.safetensors -o $(DEMO)/branch$$seed.safetensors --seed $$seed $(DEMO_TRAIN) --log $(DEMO)/branch$$seed.jsonl || exit 1; \
	done
	$(FERTOOL) ensemble $(DEMO)/data.safetensors $(DEMO)/branch1.safetensors $(DEMO)/branch2.safetensors $(DEMO)/branch3.safetensors -o $(DEMO)/ensemble.safetensors
	$(FERTOOL) ensemble $(DEMO)/data.safetensors $(DEMO)/branch1.safetensors $(DEMO)/branch2.safetensors $(DEMO)/branch3.safetensors --average -o $(DEMO)/average.safetensors
	$(FERTOOL) eval $(DEMO)/data.safetensors $(DEMO)/ensemble.safetensors --split val -o $(DEMO)/preds.npz
	$(FERTOOL) eval $(DEMO)/data.safetensors $(DEMO)/branch1.safetensors --split val -o $(DEMO)/preds-branch1.npz --json > $(DEMO)/eval-branch1.json
	$(FERTOOL) confusion $(DEMO)/preds.npz -o $(DEMO)/confusion.png --csv $(DEMO)/confusion.csv
	$(FERTOOL) compare $(DEMO)/preds-branch1.npz $(DEMO)/preds.npz --grid $(DEMO)/disagree.png
	$(FERTOOL) calibrate $(DEMO)/ensemble.safetensors $(DEMO)/data.safetensors -o $(DEMO)/calibrated.safetensors
	$(FERTOOL) eval $(DEMO)/data.safetensors $(DEMO)/calibrated.safetensors --split val -o $(DEMO)/preds-calibrated.npz --json > $(DEMO)/eval-calibrated.json
	$(FERTOOL) reliability $(DEMO)/preds.npz $(DEMO)/preds-calibrated.npz -o $(DEMO)/reliability.png
	$(FERTOOL) saliency $(DEMO)/branch1.safetensors --data $(DEMO)/data.safetensors --index 0-5 --target true -o $(DEMO)/saliency.png
	$(FERTOOL) saliency $(DEMO)/ensemble.safetensors --data $(DEMO)/data.safetensors --index 0-5 --method gradcam -o $(DEMO)/gradcam.png
	$(FERTOOL) filters $(DEMO)/branch1.safetensors --layer featex1 -o $(DEMO)/filters.png
	$(FERTOOL) curves $(DEMO)/branch1.safetensors $(DEMO)/branch2.safetensors $(DEMO)/branch3.safetensors $(DEMO)/ensemble.safetensors -o $(DEMO)/curves.png
	$(FERTOOL) info $(DEMO)/ensemble.safetensors
	# A real photo (scikit-image's astronaut, from the dev install) through the bundled FER2013 model.
	$(BIN)/python -c "from skimage import data; from PIL import Image; Image.fromarray(data.astronaut()).save('$(DEMO)/astronaut.png')"
	$(FERTOOL) predict $(DEMO)/astronaut.png --annotate $(DEMO)/annotated
	$(FERTOOL) saliency $(DEMO)/astronaut.png --detect -o $(DEMO)/astronaut-saliency.png
	# A video (made from scikit-image's photos), its rows, their timeline and an annotated copy.
	$(BIN)/python scripts/demo_video.py $(DEMO)/clip.mp4
	$(FERTOOL) predict $(DEMO)/clip.mp4 --fps 10 --smooth --csv --annotate $(DEMO)/clip-faces.mp4 > $(DEMO)/clip.csv
	$(FERTOOL) timeline $(DEMO)/clip.csv -o $(DEMO)/timeline.png
	# The bundled model as ONNX, run by ONNX Runtime on the same photo.
	$(FERTOOL) export -o $(DEMO)/default.onnx
	$(FERTOOL) predict $(DEMO)/default.onnx $(DEMO)/astronaut.png
	@echo "demo: artifacts and figures in $(DEMO)/"

# Two pytest-xdist workers, one core each, a test file per worker at a time (module fixtures are
# built once): many tests wait on child processes or run one-thread children, and serially the
# suite took 13-15 min on a 2-core AVX-512 Xeon. PYTEST_ARGS= runs it in one process.
PYTEST_ARGS ?= -n 2 --dist loadfile
test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Also the slow tests (full-size runs); not part of CI.
test-all: $(STAMP)
	$(BIN)/python -m pytest -q --run-slow $(PYTEST_ARGS)

# Rewrite completions/ (bash, zsh, fish) from the CLI; tests/test_completions.py fails when stale.
completions: $(STAMP)
	$(BIN)/python scripts/completions.py

# Rewrite docs/CLI.md, the reference of every command and option; tests/test_docs.py fails when stale.
docs: $(STAMP)
	$(BIN)/python scripts/cli_docs.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
