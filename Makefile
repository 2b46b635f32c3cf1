# The two commands a newcomer types (README): `make run` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Debian packages the real-component tests use (SPEC §7); installed only as root and when missing.
DEBS   := postfix prometheus prometheus-alertmanager pflogsumm
BENCH_DEBS := prometheus-postfix-exporter mtail

.PHONY: run demo test test-unit lint setup system-deps bench clean

run: setup
	@if [ -S /var/spool/postfix/public/showq ] || [ -n "$$MTAQ_CONFIG_FILE" ]; then \
		exec $(BIN)/mtaq-exporter $(ARGS); \
	else \
		echo "no local Postfix found: running the demo on bundled real Postfix data"; \
		exec $(BIN)/mtaq-exporter demo $(ARGS); \
	fi

demo: setup
	$(BIN)/mtaq-exporter demo $(ARGS)

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

system-deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "not root: skipping apt-get install of$$missing (lab tests will skip)"; exit 0; fi; \
	echo "installing$$missing"; \
	echo "postfix postfix/main_mailer_type select Local only" | debconf-set-selections; \
	echo "postfix postfix/mailname string localhost" | debconf-set-selections; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null

test: setup system-deps lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-unit: setup
	$(BIN)/python -m pytest -q -m "not lab" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check exporter collectors tests bench scripts

# Benchmarks print ratios against baselines measured in the same run (not part of `make test`).
# queue_bench needs root (it runs a private Postfix); log_bench compares with Debian's
# prometheus-postfix-exporter and mtail when installed.
bench: setup system-deps
	@[ "$$(id -u)" != 0 ] || dpkg -s $(BENCH_DEBS) >/dev/null 2>&1 || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BENCH_DEBS) >/dev/null
	$(BIN)/python -m bench.queue_bench
	$(BIN)/python -m bench.log_bench
	$(BIN)/python -m bench.latency_bench
	$(BIN)/python -m bench.tailer_bench
	$(BIN)/python -m bench.dnsbl_bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
