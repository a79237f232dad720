# Enroll Sync — the two commands are `make run` and `make test`; each does the whole set-up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SANDBOX_PORT ?= 5001
EDFI_PORT ?= 5002
AERIES_PORT ?= 5003
PORT ?= 5000
PYTEST_ARGS ?=

.PHONY: run test setup assets migrate bench clean screenshots

setup: $(VENV)/.installed assets

$(VENV)/.installed: pyproject.toml plugins/sis_powerschool/pyproject.toml plugins/sis_generic/pyproject.toml \
		plugins/sis_aeries/pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Enroll Sync needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' -e plugins/sis_powerschool -e plugins/sis_generic \
	  -e plugins/sis_aeries
	touch $@

assets: static/vendor/.installed

# Front-end files from npm (versions pinned in package-lock.json): htmx, Bootstrap 5.3 (CSS
# and its JS bundle with Popper), Bootstrap Icons (CSS + fonts), Chart.js. axe-core is a
# devDependency the browser tests inject from node_modules; it is never served.
static/vendor/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	rm -rf static/vendor
	mkdir -p static/vendor/bootstrap static/vendor/bootstrap-icons
	cp node_modules/htmx.org/dist/htmx.min.js static/vendor/htmx.min.js
	cp node_modules/bootstrap/dist/css/bootstrap.min.css node_modules/bootstrap/dist/css/bootstrap.min.css.map static/vendor/bootstrap/
	cp node_modules/bootstrap/dist/js/bootstrap.bundle.min.js node_modules/bootstrap/dist/js/bootstrap.bundle.min.js.map static/vendor/bootstrap/
	cp node_modules/bootstrap-icons/font/bootstrap-icons.min.css static/vendor/bootstrap-icons/
	cp -r node_modules/bootstrap-icons/font/fonts static/vendor/bootstrap-icons/fonts
	cp node_modules/chart.js/dist/chart.umd.min.js static/vendor/chart.umd.min.js
	test -f node_modules/chart.js/dist/chart.umd.min.js.map && cp node_modules/chart.js/dist/chart.umd.min.js.map static/vendor/ || true
	touch $@

migrate: setup
	$(BIN)/enroll-sync db upgrade

# Serve the demo: the PowerSchool sandbox on $(SANDBOX_PORT), an Ed-Fi-style sandbox on
# $(EDFI_PORT), the Aeries sandbox on $(AERIES_PORT), the app (with its in-process sync
# worker) on $(PORT).
run: migrate
	@mkdir -p instance
	@$(BIN)/enroll-sync demo --sandbox-url powerschool=http://127.0.0.1:$(SANDBOX_PORT) \
	  --sandbox-url edfi=http://127.0.0.1:$(EDFI_PORT) \
	  --sandbox-url aeries=http://127.0.0.1:$(AERIES_PORT)
	@echo "Sandboxes: PowerSchool on http://127.0.0.1:$(SANDBOX_PORT), Ed-Fi on http://127.0.0.1:$(EDFI_PORT), Aeries on http://127.0.0.1:$(AERIES_PORT)"
	@$(BIN)/enroll-sync sandbox powerschool --port $(SANDBOX_PORT) --db instance/powerschool_sandbox.db & ps=$$!; \
	  $(BIN)/enroll-sync sandbox edfi --port $(EDFI_PORT) & edfi=$$!; \
	  $(BIN)/enroll-sync sandbox aeries --port $(AERIES_PORT) --db instance/aeries_sandbox.db \
	    --seed-students 300 & aeries=$$!; \
	  trap "kill $$ps $$edfi $$aeries 2>/dev/null" EXIT INT TERM; \
	  $(BIN)/enroll-sync serve --port $(PORT)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The README's pictures: the browser tests, writing docs/screenshots/ as well.
screenshots: setup
	ENROLL_SYNC_README_SCREENSHOTS=1 $(BIN)/python -m pytest tests/browser -q

bench: setup
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) node_modules static/vendor instance build *.egg-info
