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

# Progress bars off and one kernel spec: stored outputs must not depend on the terminal or the user's Jupyter set-up.
export TQDM_DISABLE := 1
export JUPYTER_PREFER_ENV_PATH := 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1
unexport MPLBACKEND

.PHONY: setup notebooks run book html test test-unit test-notebooks test-browser bench serve clean

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

html: setup                       ## render the stored notebooks (no execution) into _build/html
	$(BIN)/jupyter-book build -W -n --keep-going -q .
	@echo "The book is at $(CURDIR)/_build/html/index.html"

book: setup notebooks html        ## set up, execute every chapter, build the HTML

test: test-unit test-notebooks html test-browser   ## every check

test-unit: setup                  ## library tests + notebook sync/output/link checks
	$(BIN)/python -m pytest tests -q -m "not browser"

test-notebooks: setup             ## nbval: re-execute every stored notebook and compare its printed outputs
	$(BIN)/python -m pytest $(NBVAL) $(NOTEBOOKS) -q

test-browser: setup               ## open the built HTML in headless Chromium (needs `make html` and /usr/bin/chromium)
	$(BIN)/python -m pytest tests/test_browser.py -q -m browser

QUICK ?=
BENCH_THREADS ?= 2
bench: setup                      ## benchmarks -> bench/RESULTS.md, book appendix (QUICK=1: <= 3 min, into bench/quick/)
	$(BIN)/python bench/run.py --threads $(BENCH_THREADS) $(if $(QUICK),--quick,)

serve:
	$(BIN)/python -m http.server 8000 --bind 127.0.0.1 -d _build/html

clean:
	rm -rf _build outputs
