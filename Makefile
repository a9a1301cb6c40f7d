# scimgate — two commands: `make demo` (run) and `make test` (test).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo
STAMP := $(VENV)/.installed

.PHONY: demo test test-sqlite lint typecheck bench bench-quick system-deps haproxy30 venv clean

# System packages the product and its tests need (Debian 12): HAProxy, PostgreSQL, wrk, and
# Apache with mod_auth_openidc (the OIDC login front of docs/browser-sso.md, run by the tests), and
# chromium for the admin console's browser tests (driven by Playwright; never `playwright install`).
system-deps:
	@need=""; \
	command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need="$$need haproxy"; \
	[ -x /usr/lib/postgresql/15/bin/postgres ] || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need="$$need postgresql"; \
	command -v pg_isready >/dev/null || need="$$need postgresql-client"; \
	command -v wrk >/dev/null || need="$$need wrk"; \
	command -v curl >/dev/null || need="$$need curl"; \
	command -v jq >/dev/null || need="$$need jq"; \
	command -v sqlite3 >/dev/null || need="$$need sqlite3"; \
	[ -x /usr/sbin/apache2 ] || need="$$need apache2"; \
	[ -f /usr/lib/apache2/modules/mod_auth_openidc.so ] || need="$$need libapache2-mod-auth-openidc"; \
	[ -x /usr/bin/chromium ] || need="$$need chromium"; \
	if [ -n "$$need" ]; then \
	  echo "installing:$$need"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$need >/dev/null; \
	  $$SUDO systemctl disable --now haproxy >/dev/null 2>&1 || true; \
	  $$SUDO systemctl disable --now postgresql >/dev/null 2>&1 || true; \
	  $$SUDO systemctl disable --now apache2 >/dev/null 2>&1 || true; \
	fi

# HAProxy 3.0 LTS beside Debian 12's 2.6: built once from Debian 13's checksum-verified source
# into ~/.cache/scimgate/haproxy-3.0.11/ (outside the clone), reused while `haproxy -v` agrees.
HAPROXY30 = $$(bash scripts/build-haproxy-3.0.sh)
haproxy30: system-deps
	@bash scripts/build-haproxy-3.0.sh

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## Run the main job: SCIM endpoint + HAProxy enforcing the demo policy (SQLite).
demo: system-deps haproxy30 venv
	$(BIN)/python -m scimgate.instance.demo_session --dir $(DEMO_DIR)

## Set everything up and run the whole test suite (SQLite and PostgreSQL).
# The enforcement, fault and live-session tests run on 2.6 and on 3.0 (a missing version fails).
test: system-deps haproxy30 venv
	SCIMGATE_HAPROXY_30="$(HAPROXY30)" SCIMGATE_REQUIRE_HAPROXY=2.6,3.0 \
	  $(BIN)/pytest -q -m "not slow" -p no:cacheprovider

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: system-deps haproxy30 venv
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench.run
	SCIMGATE_HAPROXY_30="$(HAPROXY30)" $(BIN)/python -m bench.versions

bench-quick: system-deps haproxy30 venv
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench.run --quick
	SCIMGATE_HAPROXY_30="$(HAPROXY30)" $(BIN)/python -m bench.versions --quick

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
