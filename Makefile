# The two commands of the README's quick start: `make test` and `make book`.
# Both create .venv on first use and reuse it afterwards (the stamp file tracks pyproject.toml and
# constraints/book.txt, the exact versions the book is built with).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
# pip here warns once per package about index folders this machine lacks; keep the log readable.
QUIET_PIP := grep -v '^WARNING: Location' || true
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pip byte-compiles what it installs (about 75 s here). Not skipped: where PYTHONDONTWRITEBYTECODE is
# set, as on CI machines, Python would then recompile every imported module in every process.
PIP_INSTALL := $(PY) -m pip install -q -c constraints/book.txt
export MAMLBOOK_DATA ?= $(abspath ../shared/data)

.PHONY: venv test book site lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints/book.txt scripts/install-learn2learn.sh
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e '.[book,test,compare,rl]' 2>&1 | { $(QUIET_PIP); }
	bash scripts/install-learn2learn.sh $(PY) 2>&1 | { $(QUIET_PIP); }
	@# TensorFlow and JAX (the "Tools and frameworks" chapter): optional, their tests skip without them.
	$(PIP_INSTALL) -e '.[frameworks]' 2>&1 | { $(QUIET_PIP); } \
		|| echo "make venv: TensorFlow/JAX did not install; their tests and the chapter's rows are skipped" >&2
	@# MuJoCo (the running cheetah, mamlbook.rl.cheetah): optional, its tests skip without it.
	$(PIP_INSTALL) -e '.[mujoco]' 2>&1 | { $(QUIET_PIP); } \
		|| echo "make venv: MuJoCo did not install; the cheetah's tests are skipped" >&2
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# The docstring examples (>>>) of the library run as doctests; the layers above it (bench, studies,
# cli) are left out: they need the comparison peers and the studies' data.
DOCTESTS := --doctest-modules mamlbook --ignore=mamlbook/bench --ignore=mamlbook/studies --ignore=mamlbook/cli \
	--ignore=book/_ext --ignore=book/reference/_ext

# Every test: each chapter executed as a notebook (`--nbmake book`, smoke size, one test per
# chapter), the book built from those executions and browsed, the wheel in a fresh environment and
# the docstring examples. The test files are spread over one process per core, at most 4
# (pytest-xdist, a whole file per process so that a module's fixture is built once); `make test
# JOBS=1` runs them in one process. Beside each other, the processes run torch on one thread each
# (unless OMP_NUM_THREADS says otherwise): two threads per process on a machine whose cores are all
# busy wait on each other, and a chapter then takes 7 times as long (94 s against 13 s for code.md).
JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n > 4 ? 4 : n )))
XDIST := $(if $(filter-out 0 1,$(JOBS)),-n $(JOBS) --dist loadfile,)
TEST_THREADS := $(if $(XDIST),OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1},)
test: venv
	$(VENV)/bin/ruff check mamlbook tests
	MAMLBOOK_SMOKE=1 $(TEST_THREADS) $(PY) -m pytest -q -ra $(XDIST) --nbmake book tests $(DOCTESTS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# Executes the chapters at full size and builds the HTML book into _build/html. Incremental:
# jupyter-cache re-executes only chapters whose code changed (all of them after a change to the
# package or to book/results/, see book/_ext/book_cache.py).
book: venv
	MAMLBOOK_SMOKE=0 $(VENV)/bin/jupyter-book build . -W -n --keep-going

# The published site: the built book as a self-contained folder (no CDN, relative links), ready to
# upload to any static host; .github/workflows/book.yml deploys it to GitHub Pages.
site: book
	rm -rf _build/site
	cp -r _build/html _build/site
	touch _build/site/.nojekyll
	@echo "site: _build/site ($$(find _build/site -name '*.html' | wc -l) pages)"

lint: venv
	$(VENV)/bin/ruff check mamlbook tests

bench: venv
	$(VENV)/bin/mamlbook bench

clean:
	rm -rf _build .pytest_cache
