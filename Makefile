# Identity Crisis, the executable book.
#   make book   environment, every chapter executed (papermill), HTML built into _build/html
#   make test   unit tests and doctests, nbval on every chapter, chapters re-run with other
#               parameters (two files at a time; TEST_JOBS=1 for one), and the HTML build with
#               warnings as errors
#   make check-html   the HTML built, then every page opened in headless Chromium: images,
#               glue, cross-references, math and the console checked; a screenshot of Fig. 3
#               (make test runs it where Chromium and chromedriver are installed)
#   make test-portable   make test with AVX2 kernels on an empty results cache (another CPU)
#   make claims every chapter's stored claims table, and those of the pages at the paper's scale
#               (a page passes when its note names each claim that fails at its scale)
#   make paper  the chapters at the paper's scale (their paper profiles), stored in book/paper/ and
#               rendered in the book; hours on a 2-core CPU (each profile states its cost), minutes
#               on a GPU; resumes from the results cache. CI checks their claims, never runs them
#   make bench  training speed: every way identlib trains a network against the plain PyTorch
#               loop and the machine's peak, and the book's CNNs (those of the results cache)
#               alone and grouped, and a narrow group's activations channels-last against
#               contiguous; bench-chapters: each chapter's run time, cold and warm cache,
#               and the book's. Both write book/data/runtime/, which the Runtime chapter
#               reads (then `identlib refresh runtime`)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Trained networks are cached here, shared by `make book` and `make test`.
export IDENTLIB_CACHE_DIR ?= $(CURDIR)/.cache/identlib
export IDENTLIB_PROGRESS ?= 0
export PYTHONHASHSEED := 0

.PHONY: book test test-portable claims env chapters html check-html unit clean bench bench-chapters paper

book: chapters html

env: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

chapters: env
	$(BIN)/python -m identlib refresh --jobs 2

html: env
	$(BIN)/jupyter-book build . -W -n --keep-going

check-html: html
	$(BIN)/python bench/check_html.py

# Two pytest processes (pytest-xdist), each taking whole files (a chapter's cells run in order in
# one kernel), the chapters first: the book's longest files start at once; the 25 slowest tests
# are listed at the end (where the time of a run goes). A network that two
# chapters need is trained by the first and waited for by the other (the results cache's claims).
# Side by side, each process evaluates on one torch thread and trains in two one-thread processes,
# as `identlib refresh --jobs 2` does (identlib.runtime.side_by_side): a two-thread evaluation
# beside another chapter's training stalls. A cell that trains a chapter's networks cold takes
# 1209 to 1347 s here beside another chapter (the phase chapter's searches); nbval's
# per-cell limit is raised from its 2000 s to 3600 s so that a slower CPU does not fail it.
TEST_JOBS ?= 2
TEST_THREADS ?= $(if $(filter 1,$(TEST_JOBS)),2,1)

test: env
	IDENTLIB_WORKERS=$${IDENTLIB_WORKERS:-$${IDENTLIB_THREADS:-2}} IDENTLIB_THREADS=$(TEST_THREADS) \
	$(BIN)/python -m pytest book tests identlib -n $(TEST_JOBS) --dist loadfile --nbval --nbval-cell-timeout=3600 --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider --durations=25
	$(BIN)/jupyter-book build . -W -n --keep-going
	@if command -v chromedriver >/dev/null; then $(BIN)/python bench/check_html.py; \
	else echo "make test: no chromedriver, so the HTML was not checked in a browser (make check-html)"; fi

# `make test` as on a laptop CPU without AVX-512: torch's, oneDNN's and MKL's kernels limited to
# AVX2, on an empty results cache, so that every network is trained again with those kernels and
# every chapter's claims and compared outputs are checked against the ones stored here.
PORTABLE_ENV := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
PORTABLE_CACHE := $(CURDIR)/.cache/portable

test-portable: env
	rm -rf $(PORTABLE_CACHE)
	$(PORTABLE_ENV) $(BIN)/python -c "import torch; print('torch CPU kernels:', torch.backends.cpu.get_cpu_capability())"
	$(PORTABLE_ENV) IDENTLIB_CACHE_DIR=$(PORTABLE_CACHE) $(MAKE) test

# The claims table stored in every chapter (exit status 1 if a claim failed).
claims: env
	for c in $$($(BIN)/python -m identlib chapters | cut -d' ' -f1); do $(BIN)/python -m identlib claims $$c || exit 1; done
	for nb in book/paper/*.ipynb; do [ -e "$$nb" ] || continue; $(BIN)/python -m identlib claims $$nb || exit 1; done

# The paper profiles, one chapter at a time (each trains in $$IDENTLIB_WORKERS processes), and the
# profiles paper-WHAT (pages CHAPTER-WHAT). Set IDENTLIB_DEVICE=cuda to require a GPU;
# PAPER_CHAPTERS to run some of the pages (phase-init, layers, ...). The Runtime page,
# which lists the stored runs, is then executed again.
PAPER_CHAPTERS ?=
paper: env
	@echo "expected: several hours on a 2-core CPU, minutes on a GPU (book/paper/index.md lists each cost)"
	$(BIN)/python -m identlib refresh --profile paper $(PAPER_CHAPTERS)
	$(BIN)/python -m identlib refresh runtime

unit: env
	$(BIN)/python -m pytest tests identlib -p no:cacheprovider

bench: env
	$(BIN)/python bench/bench.py --jobs-from $(IDENTLIB_CACHE_DIR)
	$(BIN)/python bench/memory_format.py

bench-chapters: env
	$(BIN)/python bench/chapters.py

clean:
	rm -rf _build
