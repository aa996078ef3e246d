# Two commands: `make run` (the service with the demo site) and `make test` (everything).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test install install-test browser loadbalancer lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

# The widget's tests drive Debian's Chromium (never a downloaded browser build).
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The load-balanced pair's test (HAProxy) and the deployment guide's TLS test (nginx),
# both from Debian's packages.
loadbalancer:
	@{ command -v haproxy || test -x /usr/sbin/haproxy; } >/dev/null && \
	{ command -v nginx || test -x /usr/sbin/nginx; } >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy nginx; }

run: install
	$(BIN)/consent init-db
	$(BIN)/consent seed-demo
	@echo "Demo page: http://$(HOST):$(PORT)/"
	CONSENT_PUBLIC_URL=http://$(HOST):$(PORT) $(BIN)/consent run --host $(HOST) --port $(PORT)

test: install-test browser loadbalancer
	$(BIN)/ruff check consent tests bench
	$(BIN)/pytest

lint: install-test
	$(BIN)/ruff check consent tests bench
	$(BIN)/ruff format --check consent tests bench
