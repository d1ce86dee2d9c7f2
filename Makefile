# batchrun: `make run JOB=demo-summarise`, `make test`. The first use creates .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
READY  := $(VENV)/.ready
JOB    ?=
# JOB=name means jobs/name.toml; a path to a .toml file works too.
JOB_FILE = $(if $(filter %.toml,$(JOB)),$(JOB),jobs/$(JOB).toml)

GATEWAY_VENV  := .venv-gateway
GATEWAY_PINS  := tests/gateway/requirements.txt
GATEWAY_READY := $(GATEWAY_VENV)/.ready

.PHONY: run validate status test test-gateway lint bench emulator redis chromium clean

$(READY): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(READY)

run: $(READY)
	@test -n "$(JOB)" || { echo "usage: make run JOB=demo-summarise (a name in jobs/ or a .toml path)"; exit 2; }
	$(BIN)/batchrun run $(JOB_FILE) $(ARGS)

validate: $(READY)
	$(BIN)/batchrun validate $(JOB_FILE)

status: $(READY)
	$(BIN)/batchrun status $(JOB_FILE)

test: $(READY) redis chromium
	$(BIN)/pytest -q $(ARGS)

# A real LiteLLM Proxy (pinned exactly, in its own venv) in front of the emulator: slow (the
# per-minute windows take minutes to measure), so not part of `make test`.
$(GATEWAY_READY): $(GATEWAY_PINS)
	rm -rf $(GATEWAY_VENV)
	$(PYTHON) -m venv $(GATEWAY_VENV)
	$(GATEWAY_VENV)/bin/pip install --quiet --upgrade pip
	$(GATEWAY_VENV)/bin/pip install --quiet -r $(GATEWAY_PINS)
	touch $(GATEWAY_READY)

test-gateway: $(READY) $(GATEWAY_READY) redis
	BATCHRUN_GATEWAY_TESTS=1 $(BIN)/pytest -q -s tests/gateway $(ARGS)  # -s: the measured figures

# The team-limit tests start a real redis-server on 127.0.0.1; install it where missing
# (Debian's package, as root). Without it those tests are skipped, with the reason.
redis:
	@command -v redis-server >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get install -y -qq redis-server >/dev/null 2>&1 \
	      || (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null)) ; } \
	  || echo "redis-server is not installed: the team-limit tests will be skipped"

# The report test opens a report in headless Chromium; install Debian's package where missing
# (as root). Without it that test is skipped, with the reason.
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get install -y -qq chromium >/dev/null 2>&1 \
	      || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)) ; } \
	  || echo "chromium is not installed: the report's browser test will be skipped"

lint: $(READY)
	$(BIN)/ruff check batchrun tests
	$(BIN)/ruff format --check batchrun tests
	$(BIN)/mypy --strict batchrun
	$(BIN)/mypy --strict tests

bench: $(READY)
	$(BIN)/python -m batchrun.bench $(ARGS)

emulator: $(READY)
	$(BIN)/batchrun emulator $(ARGS)

clean:
	rm -rf $(VENV) $(GATEWAY_VENV) out .pytest_cache .mypy_cache .ruff_cache .hypothesis
