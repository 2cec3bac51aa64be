# The two commands a new machine needs: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
DEMO_DATA := data/demo
LAKE   ?= lakehouse
SHOPLAKE := $(VENV)/bin/shoplake --lake $(LAKE)

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## make demo: generate a month of shop data, ingest it, build every table, print a summary.
demo: install
	$(SHOPLAKE) generate products --out $(DEMO_DATA)
	$(SHOPLAKE) generate clickstream --out $(DEMO_DATA) --rows 2000000 --dirty-fraction 0.001
	$(SHOPLAKE) generate retail --out $(DEMO_DATA) --start 2010-12-01 --days 365 --dirty-fraction 0.001
	$(SHOPLAKE) ingest products $(DEMO_DATA)/products.csv.gz
	$(SHOPLAKE) ingest clickstream $(DEMO_DATA)/clickstream.csv.gz
	$(SHOPLAKE) ingest retail $(DEMO_DATA)/retail.csv.gz
	$(SHOPLAKE) build
	$(SHOPLAKE) summary
	@echo "Query it:  $(VENV)/bin/shoplake --lake $(LAKE) sql 'select * from gold.daily_funnel limit 5'"

## make test: install everything and run the whole test suite.
test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests bench

bench: install
	$(PY) bench/pipeline.py --events 10000000

clean:
	rm -rf $(VENV) $(LAKE) $(DEMO_DATA) .pytest_cache
