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
export MAMLBOOK_DATA ?= $(abspath ../shared/data)

.PHONY: venv test book lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints/book.txt scripts/install-learn2learn.sh
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints/book.txt -e '.[book,test,compare]' 2>&1 | { $(QUIET_PIP); }
	bash scripts/install-learn2learn.sh $(PY) 2>&1 | { $(QUIET_PIP); }
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# The docstring examples (>>>) of the library run as doctests; the layers above it (bench, studies,
# cli) are left out: they need the comparison peers and the studies' data.
DOCTESTS := --doctest-modules mamlbook --ignore=mamlbook/bench --ignore=mamlbook/studies --ignore=mamlbook/cli

# Every test, the executed chapters (smoke size), the built book, the wheel in a fresh environment
# and the docstring examples included.
test: venv
	$(VENV)/bin/ruff check mamlbook tests
	MAMLBOOK_SMOKE=1 $(PY) -m pytest -q -ra tests $(DOCTESTS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# Executes every chapter at full size and builds the HTML book into _build/html.
book: venv
	MAMLBOOK_SMOKE=0 $(VENV)/bin/jupyter-book build . --all -W -n --keep-going

lint: venv
	$(VENV)/bin/ruff check mamlbook tests

bench: venv
	$(VENV)/bin/mamlbook bench

clean:
	rm -rf _build .pytest_cache
