# The two commands a newcomer types (README): `make run` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Debian packages the real-component tests use (SPEC §7); installed only as root and when missing.
# chromium (with its driver package) renders the status page in the browser tests; podman, buildah,
# runc and mmdebstrap build and run the image in the container lab; pipx installs the wheel.
DEBS   := postfix prometheus prometheus-alertmanager pflogsumm chromium chromium-driver \
          podman buildah runc mmdebstrap pipx libidn12
BENCH_DEBS := prometheus-postfix-exporter mtail
# Postfix's tools live in /usr/sbin, which Debian leaves out of a normal user's PATH: the agent
# finds Postfix (postconf) and falls back to postqueue -j through it.
RUN_PATH := $(PATH):/usr/local/sbin:/usr/sbin:/sbin
# constraints.txt pins every dependency (the image installs the same versions).
PIP := $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: run demo test test-unit lint setup setup-run system-deps bench clean constraints

# The agent when a configuration is given (MTAQ_CONFIG_FILE or --config.file in ARGS) or Postfix is
# found the way the agent finds it; the demo otherwise. ARGS go to either (both take the web flags).
run: setup-run
	@export PATH="$(RUN_PATH)"; \
	if [ -n "$$MTAQ_CONFIG_FILE" ] || case " $(ARGS)" in *" --config.file"*) true;; *) false;; esac || \
		$(BIN)/python -c 'import sys; from collectors.postfix.instance import postfix_present; sys.exit(not postfix_present())'; then \
		exec $(BIN)/mtaq-exporter $(ARGS); \
	else \
		echo "no local Postfix found (postconf, showq socket): running the demo on bundled real Postfix and Exim data"; \
		exec $(BIN)/mtaq-exporter demo $(ARGS); \
	fi

demo: setup-run
	$(BIN)/mtaq-exporter demo $(ARGS)

# Running needs the package and its dependencies only; the test tools come with `make test`.
setup-run: $(VENV)/.installed-run
setup: $(VENV)/.installed-test

$(VENV)/.installed-run: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "mtaq-exporter needs Python 3.11 or newer: make run PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-run
	$(PIP) -e '.[test]'
	touch $@

# Exim's lab: exim4-daemon-light conflicts with postfix, so tests/lab/exim.py fetches it with
# apt-get download and unpacks it privately (once; libidn12 above is the library it lacks).
system-deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "not root: skipping apt-get install of$$missing (lab tests will skip)"; exit 0; fi; \
	echo "installing$$missing"; \
	echo "postfix postfix/main_mailer_type select Local only" | debconf-set-selections; \
	echo "postfix postfix/mailname string localhost" | debconf-set-selections; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null
	@if [ "$$(id -u)" = 0 ] && [ -x $(BIN)/python ]; then $(BIN)/python -m tests.lab.exim install; fi

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
	$(BIN)/python -m bench.analyze_bench
	$(BIN)/python -m bench.steady_bench --duration 60
	$(BIN)/python -m bench.latency_bench
	$(BIN)/python -m bench.tailer_bench
	$(BIN)/python -m bench.dnsbl_bench
	$(BIN)/python -m bench.exim_bench

# Re-pin constraints.txt after changing the dependencies in pyproject.toml: the newest versions
# pyproject.toml allows, resolved in a scratch venv.
constraints:
	rm -rf .cache/constraints-venv
	$(PYTHON) -m venv .cache/constraints-venv
	.cache/constraints-venv/bin/pip install --quiet --disable-pip-version-check '.[test]' $$($(PYTHON) -c \
		'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"])')
	{ grep '^#' constraints.txt; \
	  .cache/constraints-venv/bin/pip freeze --all --exclude mtaq-exporter | grep -v '^pip=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .cache/constraints-venv

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info build
