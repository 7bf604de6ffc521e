# The two commands: `make up` runs aisoar locally, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

# Debian packages, installed when missing and we may (root): venv support, the
# Chromium the UI tests drive (browsers are never downloaded by a test tool), and the
# Prometheus Alertmanager the Alertmanager tests start themselves (on a free loopback port,
# clustering off: the package's own service, if systemd runs it, on 9093/9094 plays no part),
# and PostgreSQL's server binaries, from which the tests make throwaway clusters of their own
# (tests/servers/postgres.py: a free loopback port, a socket in their own directory). The
# package also creates a system cluster (15/main, localhost:5432) that systemd may start; our
# clusters never use it nor its port or socket directory, so the two do not collide.
APT_INSTALL = [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq

.PHONY: up test lint bench clean system-packages

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { $(APT_INSTALL) python3-venv >/dev/null; } || \
		{ echo "python3 needs venv support: apt-get install python3-venv"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,aws,lancedb,servers,postgres,signing]'
	touch $(STAMP)

system-packages:
	@command -v chromium >/dev/null || { $(APT_INSTALL) chromium >/dev/null; } || \
		{ echo "the UI tests need Debian's chromium: apt-get install chromium"; exit 1; }
	@command -v prometheus-alertmanager >/dev/null || { $(APT_INSTALL) prometheus-alertmanager >/dev/null; } || \
		{ echo "the Alertmanager tests need Debian's prometheus-alertmanager: apt-get install prometheus-alertmanager"; exit 1; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(APT_INSTALL) postgresql >/dev/null; } || \
		{ echo "the PostgreSQL tests need Debian's postgresql: apt-get install postgresql"; exit 1; }

up: $(STAMP)
	$(BIN)/aisoar up

test: $(STAMP) system-packages
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/containment.py

clean:
	rm -rf $(VENV) build *.egg-info
