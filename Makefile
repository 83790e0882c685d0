# The book's commands. `make` alone lists them; `make html` renders the stored book (seconds),
# `make book` reproduces everything, `make test` runs every check.
.DEFAULT_GOAL := help
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
CHAPTERS  := $(sort $(wildcard book/[0-9][0-9]_*.md))
NOTEBOOKS := $(CHAPTERS:.md=.ipynb)
# The cell timeout bounds a hung kernel, not the budget: chapter 2's training cell took over 900 s on a
# machine of this type that ran 2.5-3x slower than usual (2026-12-02); the budget is measured in bench/.
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout 2400 -p no:cacheprovider
CHAPTER ?= 01
PARAMS  ?=
OUT     ?= outputs
SWEEP   ?= sweeps/ch2-seeds.yaml
SWEEP_ARGS ?=
CSV     ?=
SUMMARY ?=
# The browser test's Chromium: Debian's by default; any other build with CHROMIUM=/path/to/chromium.
CHROMIUM ?= /usr/bin/chromium
export CHROMIUM

# Progress bars off and one kernel spec: stored outputs must not depend on the terminal or the user's Jupyter set-up.
export TQDM_DISABLE := 1
# The reproducible numeric mode (lib/rankdml/reproducible.py): the same bits on every x86-64 CPU with AVX2.
export RANKDML_REPRODUCIBLE := 1
# A CPU generation other than this machine's, for test-simulated-cpu: oneDNN and MKL limited to AVX2.
SIMULATED_CPU := ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
export JUPYTER_PREFER_ENV_PATH := 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1
unexport MPLBACKEND

.PHONY: help setup notebooks run sweep sweep-status sweep-collect book html test test-unit test-install test-notebooks test-simulated-cpu test-browser check-reproduction bench serve clean \
        _chromium

help:                             ## list every target with one line (what `make` alone does)
	@echo "make <target>   (first time: make html to view the stored book, make book to reproduce it)"
	@awk -F ':.*## ' '/^[a-zA-Z][a-zA-Z_-]*:.*## / { printf "  %-16s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

# The pins (torch, numpy, scikit-learn, matplotlib) need Python >= 3.11: say so before pip fails obscurely.
PYTHON_CHECK = import sys; v = sys.version_info[:2]; sys.exit(0 if v >= (3, 11) else \
  "make setup needs Python >= 3.11 (the pinned torch, numpy, scikit-learn and matplotlib need it), but %s is " \
  "Python %d.%d. Install Python 3.11, 3.12 or 3.13 and run: make setup PYTHON=python3.11 (remove an old $(VENV) first)" \
  % (sys.executable, v[0], v[1]))

setup: $(BIN)/.installed          ## create .venv and install the pinned environment + rankdml (editable)
$(BIN)/.installed: requirements.txt pyproject.toml
	@PY=$(BIN)/python; test -x $$PY || PY=$(PYTHON); \
	command -v $$PY > /dev/null || { echo "make setup: $$PY not found; install Python >= 3.11 or pass PYTHON=/path/to/python3.11" >&2; exit 1; }; \
	$$PY -c '$(PYTHON_CHECK)'
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

test: _chromium test-unit test-install test-notebooks test-simulated-cpu html test-browser   ## every check (the README's test command; CI runs it)

test-unit: setup                  ## library tests + notebook sync/output/link checks (no browser)
	$(BIN)/python -m pytest tests -q -m "not browser"

test-notebooks: setup             ## nbval: re-execute every stored notebook and compare its printed outputs
	$(BIN)/python -m pytest $(NBVAL) $(NOTEBOOKS) -q

test-simulated-cpu: setup         ## nbval on chapter 1 as a CPU of another generation would run it
	env $(SIMULATED_CPU) $(BIN)/python -m pytest $(NBVAL) $(firstword $(NOTEBOOKS)) -q

check-reproduction: setup         ## re-execute the chapters here (any device; ONLY=02 for one) and compare metrics within tolerances
	$(BIN)/python tools/check_reproduction.py $(ONLY)

test-install: setup               ## build the wheel, install it into a fresh venv outside the clone, use it from elsewhere
	.ci/clean_install $(BIN)/python

test-browser: _chromium html      ## open the built HTML in headless Chromium (CHROMIUM=/path to use another build)
	$(BIN)/python -m pytest tests/test_browser.py -q -m browser

# Checked first by `make test`, so a missing browser is reported before the long runs, not after them.
_chromium:
	@test -x "$(CHROMIUM)" || { echo "The browser test needs Chromium, not found at $(CHROMIUM). Install it with" \
	  "\`sudo apt-get install -y chromium\` (Debian/Ubuntu), or point to one you have:" \
	  "make test CHROMIUM=/path/to/chromium (macOS: CHROMIUM=/Applications/Chromium.app/Contents/MacOS/Chromium)." >&2; exit 1; }

QUICK ?=
BENCH_THREADS ?= 2
bench: setup                      ## benchmarks -> bench/RESULTS.md, book appendix (QUICK=1: <= 3 min, into bench/quick/)
	$(BIN)/python bench/run.py --threads $(BENCH_THREADS) $(if $(QUICK),--quick,)

serve:                            ## serve the built HTML on http://127.0.0.1:8000
	$(BIN)/python -m http.server 8000 --bind 127.0.0.1 -d _build/html

clean:                            ## remove the built HTML and the outputs of `make run`
	rm -rf _build outputs
