# The README's two commands, `make demo` and `make test`, each set up what they need first, idempotently.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
KAFKA_LIB := infra/kafka/target/lib
PRISM := infra/prism/bin/prism
FLINK_JOB_SERVER := infra/flink/target/valueloop-flink-job-server.jar
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
export TF_USE_LEGACY_KERAS := 1

.PHONY: setup prism flink chromium postgres demo test bench trap census clean

setup: $(VENV)/.installed $(KAFKA_LIB)/.resolved

# `valueloop join --mode streaming` and its test need it; the demo does not.
prism: $(PRISM)

# `valueloop join --runner flink` and its tests need it: Beam's Flink job server, from Maven Central.
flink: $(FLINK_JOB_SERVER)

$(VENV)/.installed: requirements.lock setup.py pyproject.toml schemas/_native.c kafka_io/_records.c pipelines/_tf_example.c
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "valueloop needs Python 3.11; set PYTHON=python3.11")'
	@command -v cc >/dev/null || { echo "A C compiler is missing: the join's readers and writer are C (apt-get install gcc python3-dev)" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --config-settings editable_mode=compat -e .
	touch $@

$(KAFKA_LIB)/.resolved: infra/kafka/pom.xml
	@command -v mvn >/dev/null || { echo "Maven is missing: apt-get install maven" >&2; exit 1; }
	rm -rf $(KAFKA_LIB)
	mvn --quiet --batch-mode -f infra/kafka/pom.xml dependency:copy-dependencies
	touch $@

# Beam's streaming runner, built from Beam's Go module (the SDK would download it; see infra/prism/README.md).
$(PRISM): infra/prism/version
	@command -v go >/dev/null || { echo "Go is missing: it builds Beam's Prism runner (apt-get install golang)" >&2; exit 1; }
	GOBIN=$(abspath infra/prism/bin) GOFLAGS=-mod=mod go install github.com/apache/beam/sdks/v2/go/cmd/prism@v$$(cat infra/prism/version)
	touch $@

# The audit report's test renders it in a real browser: Debian's Chromium.
chromium: $(CHROMIUM)

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "Chromium is missing and there is no apt-get to install it: install chromium" >&2; exit 1; }
	$(SUDO) apt-get install -y -qq --no-install-recommends chromium || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends chromium; }

# `valueloop airflow up` keeps Airflow's metadata database in Debian's PostgreSQL.
postgres:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || $(SUDO) apt-get install -y -qq --no-install-recommends postgresql || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends postgresql; }

$(FLINK_JOB_SERVER): infra/flink/pom.xml infra/flink/src/main/resources/simplelogger.properties
	@command -v mvn >/dev/null || { echo "Maven is missing: apt-get install maven" >&2; exit 1; }
	rm -rf infra/flink/target
	mvn --quiet --batch-mode -f infra/flink/pom.xml package

demo: setup
	$(BIN)/valueloop demo

test: setup $(PRISM) $(FLINK_JOB_SERVER) $(CHROMIUM) postgres
	$(BIN)/python -m pytest tests

bench: setup $(FLINK_JOB_SERVER)
	$(BIN)/valueloop bench ingest
	$(BIN)/valueloop bench join
	$(BIN)/valueloop bench train

# The clickbait trap, shown and escaped on a simulated world of 1.4M impressions (about 10 minutes):
# label 8 days (purchases attributed within 2 days), train on the first 4, re-rank the last 2 days' requests.
TRAP := out/trap
trap: setup
	$(BIN)/valueloop simulate --to files --out $(TRAP)/sim --requests 140000 --days 8 --seed 7
	$(BIN)/valueloop label --events $(TRAP)/sim --out $(TRAP)/examples --purchase-window-s 172800
	$(BIN)/valueloop train --examples $(TRAP)/examples --to 2026-11-05T00:00Z --preset value --out $(TRAP)/models/value
	$(BIN)/valueloop train --examples $(TRAP)/examples --to 2026-11-05T00:00Z --preset ctr --out $(TRAP)/models/ctr
	$(BIN)/valueloop evaluate --model $(TRAP)/models/value --model $(TRAP)/models/ctr --examples $(TRAP)/examples \
		--from 2026-11-05T00:00Z --ground-truth $(TRAP)/sim/ground_truth.npz --baseline ctr --out bench/results/trap

# The MMoE paper's real-data check on UCI census-income, beside shared-bottom and single-task networks.
census: setup
	$(BIN)/valueloop census

clean:
	-$(BIN)/valueloop kafka down
	rm -rf $(VENV) .run infra/kafka/target infra/flink/target infra/prism/bin
