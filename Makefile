# The two commands a new machine needs: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
DEMO_DATA := data/demo
LAKE   ?= lakehouse
LANDING ?= landing
SHOPLAKE := $(VENV)/bin/shoplake --lake $(LAKE)

.PHONY: install demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,spark]'
	touch $(STAMP)

install: $(STAMP)

## make demo: generate a month of shop data into landing folders, then run the `daily` job
## (ingest -> build every table -> train and score the models) and print a summary.
demo: install
	$(SHOPLAKE) generate products --out $(DEMO_DATA)
	$(SHOPLAKE) generate clickstream --out $(DEMO_DATA) --rows 2000000 --dirty-fraction 0.001
	$(SHOPLAKE) generate retail --out $(DEMO_DATA) --start 2010-12-01 --days 365 --dirty-fraction 0.001
	mkdir -p $(LANDING)/products $(LANDING)/clickstream $(LANDING)/retail
	cp $(DEMO_DATA)/products.csv.gz $(LANDING)/products/
	cp $(DEMO_DATA)/clickstream.csv.gz $(LANDING)/clickstream/
	cp $(DEMO_DATA)/retail.csv.gz $(LANDING)/retail/
	$(SHOPLAKE) run daily
	$(SHOPLAKE) summary
	@echo "Lake: $(LAKE)/   Landing folders: $(LANDING)/   Planted truth: $(DEMO_DATA)/_truth/"
	@echo "Query it:   $(VENV)/bin/shoplake --lake $(LAKE) sql 'select * from gold.daily_funnel limit 5'"
	@echo "Models:     $(VENV)/bin/shoplake --lake $(LAKE) ml models   (MLflow UI: ... ml ui)"
	@echo "Job runs:   $(VENV)/bin/shoplake --lake $(LAKE) jobs runs daily"
	@echo "Dashboard:  $(VENV)/bin/shoplake --lake $(LAKE) serve   then open http://127.0.0.1:8000/"
	@echo "SQL API:    $(VENV)/bin/shoplake --lake $(LAKE) serve-token add me --role analyst   (docs/SERVING.md)"
	@echo "PostgreSQL: $(VENV)/bin/shoplake --lake $(LAKE) serve --pg-port 5433   (or: ... pg), then, with the token's secret:"
	@echo "            PGPASSWORD=<secret> psql 'host=127.0.0.1 port=5433 dbname=shoplake user=me'   (BI tools: docs/SERVING.md)"

# The browser tests drive Debian's chromium (Playwright cannot download browsers here); Spark needs Java 17.
CHROMIUM ?= /usr/bin/chromium
$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "chromium is missing and apt-get is not available: install chromium"; exit 1; }
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

# The PostgreSQL endpoint's tests run the real clients: psql (postgresql-client), the JDBC driver
# (libpostgresql-jdbc-java) from a small Java program compiled by the test (javac: a JDK).
PSQL  ?= /usr/bin/psql
PGJDBC ?= /usr/share/java/postgresql.jar
JAVAC ?= /usr/bin/javac
$(PSQL) $(PGJDBC) $(JAVAC):
	@command -v apt-get >/dev/null || { echo "$@ is missing and apt-get is not available: install postgresql-client, libpostgresql-jdbc-java and a JDK"; exit 1; }
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-client libpostgresql-jdbc-java default-jdk-headless >/dev/null

## make test: install everything (Python packages, chromium, PostgreSQL clients) and run the whole test suite,
## in two worker processes (tests/conftest.py keeps the tests that share an expensive fixture in one of them).
TEST_WORKERS ?= 2
test: install $(CHROMIUM) $(PSQL) $(PGJDBC) $(JAVAC)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope

## make test-fast: the edit-run loop (a few minutes): everything but the tests marked `slow` (real processes
## crashed or racing, trained models, Spark, the browser, the complete real files).
test-fast: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope -m "not slow"

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/pipeline.py --events 10000000

clean:
	rm -rf $(VENV) $(LAKE) $(LANDING) $(DEMO_DATA) .pytest_cache
