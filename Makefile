# The book's commands. `make book` reproduces everything; `make test` runs every check.
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
CHAPTERS  := $(sort $(wildcard book/[0-9][0-9]_*.md))
NOTEBOOKS := $(CHAPTERS:.md=.ipynb)
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout 900 -p no:cacheprovider
CHAPTER ?= 01
PARAMS  ?=
OUT     ?= outputs
SWEEP   ?= sweeps/ch2-seeds.yaml
SWEEP_ARGS ?=
CSV     ?=
SUMMARY ?=

# Progress bars off and one kernel spec: stored outputs must not depend on the terminal or the user's Jupyter set-up.
export TQDM_DISABLE := 1
# The reproducible numeric mode (lib/rankdml/reproducible.py): the same bits on every x86-64 CPU with AVX2.
export RANKDML_REPRODUCIBLE := 1
# A CPU generation other than this machine's, for test-simulated-cpu: oneDNN and MKL limited to AVX2.
SIMULATED_CPU := ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
export JUPYTER_PREFER_ENV_PATH := 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1
unexport MPLBACKEND

.PHONY: setup notebooks run sweep sweep-status sweep-collect book html test test-unit test-notebooks test-simulated-cpu test-browser check-reproduction bench serve clean

setup: $(BIN)/.installed          ## create .venv and install the pinned environment + rankdml (editable)
$(BIN)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $@

notebooks: setup                  ## execute every chapter on its defaults into book/NN_name.ipynb
	for md in $(CHAPTERS); do $(BIN)/python tools/run_chapter.py $$md || exit 1; done

run: setup                        ## rerun one chapter with parameters into $(OUT)/: make run CHAPTER=01 PARAMS="-p epochs 20"
	$(BIN)/python tools/run_chapter.py book/$(CHAPTER)_*.md $(PARAMS) --out-dir $(OUT)

# Progress bar over runs on (the kernels still run with TQDM_DISABLE=1: the executed notebooks hold no bars).
sweep: setup                      ## run a sweep's unfinished runs on Dask: make sweep SWEEP=sweeps/ch2-seeds.yaml SWEEP_ARGS="--workers 2"
	TQDM_DISABLE=0 $(BIN)/python -m rankdml.sweep run $(SWEEP) $(SWEEP_ARGS)

sweep-status: setup               ## finished / failed / pending runs of $(SWEEP)
	$(BIN)/python -m rankdml.sweep status $(SWEEP)

sweep-collect: setup              ## mean ± sd per grid point of $(SWEEP); CSV=file: one row per run, SUMMARY=file: the summary
	$(BIN)/python -m rankdml.sweep collect $(SWEEP) $(if $(CSV),--csv $(CSV)) $(if $(SUMMARY),--summary-csv $(SUMMARY))

html: setup                       ## render the stored notebooks (no execution) into _build/html
	$(BIN)/jupyter-book build -W -n --keep-going -q .
	@echo "The book is at $(CURDIR)/_build/html/index.html"

book: setup notebooks html        ## set up, execute every chapter, build the HTML

test: test-unit test-notebooks test-simulated-cpu html test-browser   ## every check

test-unit: setup                  ## library tests + notebook sync/output/link checks
	$(BIN)/python -m pytest tests -q -m "not browser"

test-notebooks: setup             ## nbval: re-execute every stored notebook and compare its printed outputs
	$(BIN)/python -m pytest $(NBVAL) $(NOTEBOOKS) -q

test-simulated-cpu: setup         ## nbval on chapter 1 as a CPU of another generation would run it
	env $(SIMULATED_CPU) $(BIN)/python -m pytest $(NBVAL) $(firstword $(NOTEBOOKS)) -q

check-reproduction: setup         ## re-execute the chapters here (any device; ONLY=02 for one) and compare metrics within tolerances
	$(BIN)/python tools/check_reproduction.py $(ONLY)

test-browser: setup               ## open the built HTML in headless Chromium (needs `make html` and /usr/bin/chromium)
	$(BIN)/python -m pytest tests/test_browser.py -q -m browser

bench: setup                      ## speed benchmarks (never part of the tests)
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

serve:
	$(BIN)/python -m http.server 8000 --bind 127.0.0.1 -d _build/html

clean:
	rm -rf _build outputs
