# batchrun: `make run JOB=demo-summarise`, `make test`. The first use creates .venv from the
# lock files: `make run` the runtime ones only, `make test`, `lint` and `bench` the dev tools too.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN_LOCK  := requirements/runtime.txt
DEV_LOCK  := requirements/dev.txt
READY     := $(VENV)/.ready-run
DEV_READY := $(VENV)/.ready-dev
PIP_TOOLS := pip-tools==7.6.2
LOCK_FLAGS := --quiet --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \
              --no-emit-find-links
JOB    ?=
# JOB=name means jobs/name.toml; a path to a .toml file works too.
JOB_FILE = $(if $(filter %.toml,$(JOB)),$(JOB),jobs/$(JOB).toml)

GATEWAY_VENV  := .venv-gateway
GATEWAY_PINS  := tests/gateway/requirements.txt
GATEWAY_READY := $(GATEWAY_VENV)/.ready

.PHONY: run validate status test test-gateway lint bench emulator serve redis chromium lock clean

# Exactly the versions in the lock files, each checked against its hash; then batchrun itself.
$(READY): pyproject.toml $(RUN_LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r $(RUN_LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(READY)

$(DEV_READY): $(READY) $(DEV_LOCK)
	$(BIN)/pip install --quiet --require-hashes -r $(DEV_LOCK)
	touch $(DEV_READY)

# Refresh the lock files from pyproject.toml (pip-tools in a throwaway venv); commit them.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip $(PIP_TOOLS)
	CUSTOM_COMPILE_COMMAND="make lock" .venv-lock/bin/pip-compile $(LOCK_FLAGS) -o $(RUN_LOCK) pyproject.toml
	CUSTOM_COMPILE_COMMAND="make lock" .venv-lock/bin/pip-compile $(LOCK_FLAGS) --extra dev -o $(DEV_LOCK) pyproject.toml
	rm -rf .venv-lock

run: $(READY)
	@test -n "$(JOB)" || { echo "usage: make run JOB=demo-summarise (a name in jobs/ or a .toml path)"; exit 2; }
	$(BIN)/batchrun run $(JOB_FILE) $(ARGS)

validate: $(READY)
	$(BIN)/batchrun validate $(JOB_FILE)

status: $(READY)
	$(BIN)/batchrun status $(JOB_FILE)

# Independent tests run on WORKERS processes at once (pytest-xdist; tests that start servers
# take free ports), then the timing-sensitive ones (`serial`: real processes, signals, rates on
# real time) one at a time; each pass lists its 15 slowest. Exit 5 is "none selected" (ARGS
# naming tests of one kind only).
WORKERS ?= 2
test: $(DEV_READY) redis chromium
	$(BIN)/pytest -q -n $(WORKERS) -m "not serial" --durations=15 $(ARGS) || [ $$? = 5 ]
	$(BIN)/pytest -q -m serial --durations=15 $(ARGS) || [ $$? = 5 ]

# A real LiteLLM Proxy (pinned exactly, in its own venv) in front of the emulator: slow (the
# per-minute windows take minutes to measure), so not part of `make test`.
$(GATEWAY_READY): $(GATEWAY_PINS)
	rm -rf $(GATEWAY_VENV)
	$(PYTHON) -m venv $(GATEWAY_VENV)
	$(GATEWAY_VENV)/bin/pip install --quiet --upgrade pip
	$(GATEWAY_VENV)/bin/pip install --quiet -r $(GATEWAY_PINS)
	touch $(GATEWAY_READY)

test-gateway: $(DEV_READY) $(GATEWAY_READY) redis
	BATCHRUN_GATEWAY_TESTS=1 $(BIN)/pytest -q -s --durations=15 tests/gateway $(ARGS)  # -s: figures

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

lint: $(DEV_READY)
	$(BIN)/ruff check batchrun tests
	$(BIN)/ruff format --check batchrun tests
	$(BIN)/mypy --strict batchrun
	$(BIN)/mypy --strict tests

bench: $(DEV_READY)
	$(BIN)/python -m batchrun.bench $(ARGS)

emulator: $(READY)
	$(BIN)/batchrun emulator $(ARGS)

# OpenAI's Files and Batches API on 127.0.0.1:8080, the bundled emulator behind it; without
# BATCHRUN_SERVE_KEYS in the environment it takes any key (127.0.0.1 only).
serve: $(READY)
	$(BIN)/batchrun serve $(if $(BATCHRUN_SERVE_KEYS),,--insecure-no-auth) $(ARGS)

clean:
	rm -rf $(VENV) $(GATEWAY_VENV) out .pytest_cache .mypy_cache .ruff_cache .hypothesis
