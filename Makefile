# The README's two commands: `make quickstart` (set-up + main job) and `make test` (set-up + tests).
# Both create or reuse .venv in the repo and install what they need, apt packages included (as root).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml scripts/setup.sh | cksum | cut -d' ' -f1)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export GRADIO_ANALYTICS_ENABLED := False
export TOKENIZERS_PARALLELISM := false

.PHONY: setup quickstart test test-slow bench demo-assets clean

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(PY) $(VENV)
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

setup: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/python -m vlkit.quickstart

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# the trained models the demo shows by default (MiniOneRec on Amazon Industrial, SmolLM2): ~10 min on 2 CPU cores, once
demo-assets: $(STAMP)
	$(BIN)/python scripts/demo_assets.py

# every bench/[a-z]*.py --quick; log in results/bench.txt, table in results/bench.md
# (README's table: python bench/_run_all.py --from results/bench.txt --readme README.md)
bench: $(STAMP)
	$(BIN)/python bench/_run_all.py

clean:
	rm -rf $(VENV) .cache results/*.json results/*.png
