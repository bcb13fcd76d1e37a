# LiveDrops: thin wrappers around go and the system tools. `make run` and `make test` are all most
# people need; .ci/run calls `make test`.

GO    ?= go
BIN   := bin/livedrops
# Extra flags for `make run`, e.g. make run ARGS="-log-format text -http-addr :9090".
ARGS  ?=
# Extra flags for the load generator of `make bench-reads`, e.g. READS_ARGS="-duration 30s -levels 8,16".
READS_ARGS ?=
# Extra flags for the load generator of `make bench-orders`, e.g. ORDERS_ARGS="-runs 1 -attempts 10000".
ORDERS_ARGS ?=
# Extra flags for the load generator of `make bench-events`, e.g. EVENTS_ARGS="-duration 10s -syncs always".
EVENTS_ARGS ?=
# Flags of `make test-faults`, e.g. FAULTS_ARGS="-faults.phases redis -faults.dir /tmp/faults".
FAULTS_ARGS ?=
# Flags of the harness of `make bench-fanout`, e.g. FANOUT_ARGS="-hubs 6 -sockets 100000" (BENCHMARKS.md).
FANOUT_ARGS ?=

# Go files to format and check: everything but .git, bin/, the dev stack's data/ and node_modules/.
GOFILES = $(shell find . \( -path ./.git -o -path ./bin -o -path ./data -o -name node_modules \) -prune \
	-o -name '*.go' -type f -print)

.PHONY: run test lint lint-k6 lint-openapi build fmt clean-data bench-reads bench-orders bench-events bench-fanout
.PHONY: test-faults fuzz test-browser

## run: every role in one process on :8080, with PostgreSQL, Redis and NATS started in ./data.
# Installs redis-server and the PostgreSQL server binaries first when they are missing. The binary
# replaces the recipe's shell (exec), so Ctrl-C reaches it directly and make ends when it does.
run:
	@.ci/deps.sh redis-server postgresql
	$(GO) build -o $(BIN) ./cmd/livedrops
	exec ./$(BIN) all $(ARGS)

## test: install missing system packages, lint, then every test with the race detector (prometheus and
# nginx for the tests of deploy/).
test:
	@.ci/deps.sh redis-server postgresql docker-compose prometheus nginx chromium
	@$(MAKE) --no-print-directory lint
	$(GO) test -race -count=1 ./...

## test-faults: the whole multi-process fault test (loadtest/faults, RELIABILITY.md): 3,000 sockets over
# two hubs, orders on hot drops, every fault one at a time, then again on a Redis Cluster. `make test`
# runs its short version. FAULTS_ARGS="-faults.phases nats -faults.dir /tmp/faults" runs some phases and
# keeps every process's log.
test-faults:
	@.ci/deps.sh redis-server postgresql
	$(GO) test -count=1 -timeout 30m -v -run TestFaults ./loadtest/faults -faults.full $(FAULTS_ARGS)

## fuzz: every fuzz target of the module for FUZZTIME each (default 10s), one after the other (.ci/fuzz.sh);
# a crash fails it and its input stays under the package's testdata/fuzz/ as a regression test.
FUZZTIME ?= 10s
fuzz:
	@.ci/deps.sh redis-server postgresql
	FUZZTIME=$(FUZZTIME) .ci/fuzz.sh

## test-browser: the browser side alone (web/): headless Chromium end-to-end tests against a real
# `livedrops all`, the SDK's Node tests and tsc --checkJs (npm ci when web/node_modules is missing),
# the size budget. Screenshots land in web/test-artifacts/. `make test` runs them too.
test-browser:
	@.ci/deps.sh redis-server postgresql chromium
	$(GO) test -race -count=1 ./web/...

## lint: gofmt (must print nothing), a tidy and verified module, go vet, staticcheck (pinned in go.mod),
# docker-compose config.
lint:
	@unformatted=$$(gofmt -l $(GOFILES)); \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt: these files need formatting (run make fmt):"; echo "$$unformatted"; exit 1; \
	fi
	@$(GO) mod tidy -diff >/dev/null || \
		{ echo "go.mod or go.sum is untidy (go mod tidy fixes it):"; $(GO) mod tidy -diff; exit 1; }
	$(GO) mod verify
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	@command -v docker-compose >/dev/null || \
		{ echo "docker-compose is missing: .ci/deps.sh docker-compose installs it"; exit 1; }
	docker-compose -f docker-compose.yml config -q
	@$(MAKE) --no-print-directory lint-k6 lint-openapi

# npm folders of the lint (their own package.json and lock): `npm ci` into the folder's node_modules
# when it is missing or older than the lock.
NPM_CI = [ "$$d/node_modules/.package-lock.json" -nt "$$d/package-lock.json" ] || \
	(cd "$$d" && npm ci --no-audit --no-fund --loglevel=error)

## lint-k6: type-check the k6 scripts against @types/k6 (TypeScript pinned in loadtest/k6/package.json).
lint-k6:
	@d=loadtest/k6; $(NPM_CI)
	cd loadtest/k6 && ./node_modules/.bin/tsc --checkJs --noEmit -p jsconfig.json

## lint-openapi: Redocly CLI's recommended rules, warnings as errors, on api/openapi.yaml.
lint-openapi:
	@d=api/lint; $(NPM_CI)
	cd api/lint && REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true \
		./node_modules/.bin/redocly lint --config redocly.yaml ../openapi.yaml

## build: the binary at bin/livedrops.
build:
	$(GO) build -o $(BIN) ./cmd/livedrops

## fmt: gofmt every Go file in place.
fmt:
	gofmt -w $(GOFILES)

## clean-data: delete ./data, the dev stack's PostgreSQL, Redis and NATS data and its JWT secret.
# It asks nothing. Stop `make run` first.
clean-data:
	rm -rf ./data

# bench-*: the benchmark targets (bench-reads, bench-orders, bench-events, bench-fanout) drive the
# load generators in loadtest/ and land with the issues that build what they measure; each prints one
# final `RESULT key=value ...` line.

## bench-reads: the read mix (drops, product pages, creators, deep follower pages of a creator with
# 1,000,000 followers) against a fresh dev stack in a temporary dir, cache on then off (BENCHMARKS.md).
bench-reads:
	@.ci/deps.sh redis-server postgresql
	$(GO) build -o $(BIN) ./cmd/livedrops
	$(GO) run ./loadtest/reads -bin $(BIN) $(READS_ARGS)

## bench-orders: a flash sale on one hot drop (10,000 units, 5 per buyer) through the REST API, 2,000
# then 500 closed-loop buyers, 50,000 attempts a run, the baseline (one transaction per order, pools 4,
# 8 and 16, the fastest kept) against the batched mode and the floor (loadtest/orderfloor, the least
# grouped order service, a yardstick), alternating, 3 runs each, the per-user limit on; checks the
# books after every run and reports the product's figures as ratios to the floor (BENCHMARKS.md).
# A quick look: ORDERS_ARGS="-runs 1 -baseline=false -buyers 2000".
bench-orders:
	@.ci/deps.sh redis-server postgresql
	$(GO) build -o $(BIN) ./cmd/livedrops
	$(GO) build -o bin/orderfloor ./loadtest/orderfloor
	$(GO) run ./loadtest/orders -bin $(BIN) -floor-bin bin/orderfloor $(ORDERS_ARGS)

## bench-events: the outbox relay's commit-to-stream latency under 2,000 writes a second through the
# REST API (orders and follows, one outbox row each) and how late drop.started is after start_time
# over 200 drops starting meanwhile (posted with POST /drops), with JetStream syncing every write, then
# on an interval (2m): each time a fresh `livedrops seed` data dir and `livedrops all` on it, its
# worker running the relay and the scheduler, the stream read by a NATS consumer (BENCHMARKS.md).
bench-events:
	@.ci/deps.sh redis-server postgresql
	$(GO) build -o $(BIN) ./cmd/livedrops
	$(GO) run ./loadtest/events -bin $(BIN) $(EVENTS_ARGS)

## bench-fanout: one creator's drops to the sockets of all its followers: 19,900 on one hub by
# default, FANOUT_ARGS="-drops 20 -every 500ms" for a train of drops, FANOUT_ARGS="-hubs 6 -sockets 100000"
# for six hubs behind one NATS. PostgreSQL, Redis and NATS in a temporary dir, seeded by livedrops seed,
# livedrops worker, api and hub processes, and wsfan load generator processes of at most 19,900 sockets
# each (this machine caps a process at 20,000 open files), 100 connects in flight each; then the floor
# (loadtest/wsfloor) in the same shape for the vs_floor ratios (one hub only); -storm adds a reconnect
# storm (BENCHMARKS.md).
bench-fanout:
	@.ci/deps.sh redis-server postgresql
	$(GO) build -o $(BIN) ./cmd/livedrops
	$(GO) build -o bin/wsfan ./loadtest/wsfan
	$(GO) build -o bin/fanoutbench ./loadtest/fanoutbench
	$(GO) build -o bin/wsfloor ./loadtest/wsfloor
	./bin/fanoutbench -wsfan bin/wsfan -hub-bin $(BIN) -floor bin/wsfloor $(FANOUT_ARGS)
