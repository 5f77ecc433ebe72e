# Two commands for a new user: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# This pin matches a CPU wheel available offline on the project machines; on any other machine
# pip fetches it (or set TORCH_SPEC, e.g. TORCH_SPEC='torch' for the newest CUDA build).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
DEMO := demo_out

.PHONY: install demo test test-fast lint sample-data bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)" || $(BIN)/pip install -q "torch>=2.3"
	$(BIN)/pip install -q -e ".[dev]"
	@touch $(STAMP)

sample_data/screen.h5ad: $(STAMP) gimcli/simulation.py
	$(BIN)/gim simulate --out $@ --overwrite --features smiles --n-genes 50 --n-drugs 24 \
	  --doses 10,100,1000,10000 --n-cells 50 --n-control 400 --n-combos 6 --n-cell-lines 2 --seed 0

sample-data: sample_data/screen.h5ad

demo: sample_data/screen.h5ad
	@rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(BIN)/gim train sample_data/screen.h5ad --out $(DEMO)/run --dose-key dose --covariate-keys cell_line \
	  --smiles-key smiles --steps 1500
	$(BIN)/gim predict $(DEMO)/run --drug-features sample_data/new_drugs.csv --doses 100,10000 \
	  --n-cells 200 --out $(DEMO)/new_drugs_pred.h5ad
	$(BIN)/gim predict $(DEMO)/run --conditions 'Aspirin+Imatinib,Vorinostat+Gefitinib' --doses 10000 \
	  --out $(DEMO)/combos_pred.h5ad
	$(BIN)/gim explain $(DEMO)/run --conditions Vorinostat --covariate cell_line=line0 --top-targets 5 --n-downstream 3
	$(BIN)/gim explain $(DEMO)/run --top-targets 20 --format csv --out $(DEMO)/targets.csv
	$(BIN)/gim explain $(DEMO)/run --graph --format csv --out $(DEMO)/graph.csv
	@echo
	@echo "Demo outputs:"
	@echo "  model and run report   $(DEMO)/run/ (report.html, model.pt, model.json, metrics.csv, annotated.h5ad)"
	@echo "  predicted new drugs    $(DEMO)/new_drugs_pred.h5ad"
	@echo "  predicted combinations $(DEMO)/combos_pred.h5ad"
	@echo "  direct targets table   $(DEMO)/targets.csv"
	@echo "  learned causal graph   $(DEMO)/graph.csv"

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

lint: $(STAMP)
	$(BIN)/ruff check gimcli tests bench
	$(BIN)/ruff format --check gimcli tests bench

clean:
	rm -rf $(DEMO) sample_data/screen.h5ad sample_data/screen.truth.json .pytest_cache

# The default benchmarks with fixed seeds -> bench/RESULTS.md, and the screens suite ->
# bench/SCREENS.md (< 30 min on 2 CPU cores; sim_cost2: bench/run_all.py --only sim_cost2).
bench: $(STAMP)
	$(BIN)/python bench/run_all.py
