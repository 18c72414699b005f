# fieldmesh: the commands CI and the README use. Recipes run in bash with errexit and pipefail,
# so a failure anywhere in a pipeline fails the target.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

GO ?= go
# How long `make fuzz` runs each fuzz target (a go test -fuzztime value).
FUZZTIME ?= 30s
# Which packages test, lint, bench and fuzz look at, e.g. make fuzz PKGS=./sync/...
PKGS ?= ./...
# Extra arguments for `make run`, e.g. make run ARGS='--data /tmp/fm-a --no-mdns'.
ARGS ?=
# Extra arguments for the chaos runs, e.g. make chaos CHAOSARGS=-chaos.seed=42
CHAOSARGS ?=
# The relay load run's size (make relay-load): envelopes the relay holds, topics (teams) they are spread
# over, devices reconciling at once. The issue's figures; e.g. make relay-load RELAY_ENVELOPES=100000
RELAY_ENVELOPES ?= 1000000
RELAY_TOPICS ?= 100
RELAY_DEVICES ?= 50

.PHONY: test build lint bench fuzz run convergence property soak chaos chaos-short chaos-control relay-load

## test: every test, with the race detector, in random order (the README's test command), then the
## capture test's control build. A package in which the race runtime itself crashed, and nothing else
## went wrong, runs again, at most four times (.ci/race-test says why); a failing test fails the run.
test:
	GO=$(GO) .ci/race-test $(PKGS)
	@echo "capture test, control build (prekeys never destroyed): the thief must read the old epoch"
	$(GO) test -tags fieldmesh_keepprekeys -count=1 -run 'TestCapture(AfterRetention|OfDataDirectory)$$' ./sync/device/ ./node/

## convergence: the device core's convergence property test at full size (10,000 schedules),
## without the race detector, which would make it 10x slower (make test runs a smaller count under -race)
convergence:
	$(GO) test -run TestConvergence -count=1 -timeout 20m ./sync/device/ -device.schedules=10000 -v

## property: the device core's adversarial property test at CI size: 1,000 random team histories of
## 30 honest messages each (30,000 messages), with adversaries trying every attack (make test runs 100)
property:
	$(GO) test -run 'TestAdversarial$$' -count=1 -timeout 30m ./sync/device/ -device.histories=1000 -device.messages=30 -v

## soak: the convergence property test with 100,000 schedules and the adversarial one with 10,000
## histories (long; not run by CI)
soak:
	$(GO) test -run TestConvergence -count=1 -timeout 120m ./sync/device/ -device.schedules=100000 -v
	$(GO) test -run 'TestAdversarial$$' -count=1 -timeout 180m ./sync/device/ -device.histories=10000 -device.messages=30 -v

## build: the binary, in bin/fieldmesh
build:
	$(GO) build -o bin/fieldmesh ./cmd/fieldmesh

## lint: gofmt must have nothing to say, and go vet must pass
lint:
	@unformatted="$$(gofmt -l .)"; \
	if [[ -n "$$unformatted" ]]; then \
		echo "gofmt: these files need formatting (run gofmt -w):"; \
		echo "$$unformatted"; \
		exit 1; \
	fi
	$(GO) vet $(PKGS)
	$(GO) vet -tags chaos ./simulations/chaos/
	$(GO) vet -tags fieldmesh_noseal ./sync/envelope/ ./sync/teamkeys/ ./node/...
	$(GO) vet -tags fieldmesh_keepprekeys ./sync/teamkeys/ ./sync/device/ ./node/

## bench: every benchmark, once, so they keep compiling and running
bench:
	$(GO) test -run='^$$' -bench=. -benchtime=1x $(PKGS)

## relay-load: the clinic relay under load (BenchmarkRelayLoad, once): a relay holding RELAY_ENVELOPES
## envelopes of RELAY_TOPICS teams serves reconciliation to RELAY_DEVICES devices at once; prints p50 and
## p99 session time (and as ratios over an idle session of the same run), bytes per session and RSS, and
## fails if any envelope is lost. Without the race detector; not run by CI at this size (make bench runs
## it small). The fill of 10^6 envelopes takes minutes.
relay-load:
	$(GO) test -run='^$$' -bench='^BenchmarkRelayLoad$$' -benchtime=1x -count=1 -timeout 60m ./node/relay/ \
		-relay.envelopes=$(RELAY_ENVELOPES) -relay.topics=$(RELAY_TOPICS) -relay.devices=$(RELAY_DEVICES)

## fuzz: every fuzz target, FUZZTIME each (go test -fuzz takes one target of one package at a time)
fuzz:
	@targets="$$($(GO) test -list '^Fuzz' $(PKGS) | awk '/^Fuzz/ { f[n++] = $$1; next } /^ok / { for (i = 0; i < n; i++) print $$2, f[i]; n = 0 }')"; \
	if [[ -z "$$targets" ]]; then echo "no fuzz targets found"; exit 1; fi; \
	while read -r pkg target; do \
		echo "=== fuzz $$pkg $$target for $(FUZZTIME)"; \
		$(GO) test -run='^$$' -fuzz="^$$target\$$" -fuzztime=$(FUZZTIME) "$$pkg" < /dev/null; \
	done <<< "$$targets"

## run: a node on the default data directory (offers to initialise it on first run)
run:
	$(GO) run ./cmd/fieldmesh up $(ARGS)

## chaos: the long chaos run (~16 min): real processes in network namespaces; root, iproute2, nftables, tcpdump
chaos:
	simulations/chaos/run.sh long $(CHAOSARGS)

## chaos-short: the CI-sized chaos run (under 5 minutes)
chaos-short:
	simulations/chaos/run.sh short $(CHAOSARGS)

## chaos-control: the short run built with -tags fieldmesh_noseal; passes only if the scans FIND plaintext
chaos-control:
	simulations/chaos/run.sh short -chaos.control $(CHAOSARGS)

## deps: what the tests need besides Go and a C compiler: Debian's chromium, for the web UI's browser
## tests (node/webui), installed with apt-get when missing (as root, as CI runs); and the FHIR test
## server's npm packages (Node 20), from testdata/fhirserver's lockfile; quiet and idempotent.
## make test depends on it (the rule below), so the README's test command installs chromium.
.PHONY: deps
deps:
	@if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then \
		if [[ $$(id -u) -ne 0 ]]; then \
			echo "chromium is missing (the web UI's browser tests need it): run make deps as root, or apt-get install chromium" >&2; \
			exit 1; \
		fi; \
		echo "installing chromium with apt-get (the web UI's browser tests need it)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq >/dev/null; \
		apt-get install -y -qq chromium >/dev/null; \
	fi
	@# the FHIR test server of the record gateway's tests (testdata/fhirserver), from its lockfile, when
	@# node_modules is missing or older than the lockfile
	@if [[ ! testdata/fhirserver/node_modules/.package-lock.json -nt testdata/fhirserver/package-lock.json ]]; then \
		if ! command -v npm >/dev/null; then \
			echo "npm is missing: the FHIR test server (testdata/fhirserver) needs Node.js 20 and npm" >&2; \
			exit 1; \
		fi; \
		echo "installing the FHIR test server's packages (npm ci)"; \
		npm ci --prefix testdata/fhirserver --no-audit --no-fund --loglevel=error >/dev/null; \
	fi
test: deps

# attach-tbf: the attachment transfer time on a 256 kbit/s link (tc tbf on the loopback of a fresh
# network namespace, with a 1500-byte MTU as on a real link; needs root or user namespaces).
.PHONY: attach-tbf
attach-tbf:
	unshare -n sh -c 'ip link set lo up mtu 1500 && tc qdisc add dev lo root tbf rate 256kbit burst 4kb latency 400ms && FIELDMESH_E2E_TBF="tbf 256kbit/s" go test -count=1 -run TestAttachmentLinkE2E -v ./cmd/fieldmesh/'

## mobile-bind: the phone binding. gobind (golang.org/x/mobile, pinned in go.mod as a tool) generates
## the Java and Objective-C of the mobile facade into MOBILE_OUT; then, when the machine has a JDK, javac
## compiles the Java, against a stub of android.content.Context (the one Android class it names) in
## place of the Android SDK. An app still needs gomobile bind, with the Android NDK or Xcode, for the
## native library (see mobile/doc in mobile.go).
MOBILE_OUT ?= build/mobile
.PHONY: mobile-bind
mobile-bind:
	rm -rf $(MOBILE_OUT)
	$(GO) tool gobind -lang=java,objc -outdir=$(MOBILE_OUT) ./mobile
	@if command -v javac >/dev/null; then \
		javac -d $(MOBILE_OUT)/classes -sourcepath mobile/testdata/androidstub -Xlint:none \
			$(MOBILE_OUT)/java/go/*.java $(MOBILE_OUT)/java/mobile/*.java; \
		echo "javac: compiled the generated Java into $(MOBILE_OUT)/classes"; \
	else \
		echo "no javac: the generated Java was not compiled"; \
	fi

## sim-check: the simulator's long checks (simulations/sim): the theory test (Groenevelt, Nain & Koole)
## with 10,000 replicas a strategy, checked to 3%; the comparison with the ONE on its committed reports,
## and fieldmesh's strategy against epidemic on the same traces; and the 1,000-device, 7-day field
## benchmark (events/s, simulated seconds a second)
.PHONY: sim-check
sim-check:
	$(GO) test -run 'TestTheory$$' -count=1 -timeout 120m ./simulations/sim/ -sim.theory=10000 -v
	$(GO) test -run 'TestAgainstTheONE$$|TestFieldmeshStrategyOnTheONE$$' -count=1 -timeout 60m ./simulations/sim/ -sim.one -v
	$(GO) test -run '^$$' -bench 'BenchmarkField1k$$' -benchtime=1x -timeout 60m ./simulations/sim/ -sim.bench

## sim-emulate: the simulator's fidelity check (simulations/emul) without the race detector: the
## emulation scenario on real nodes on mocknet in virtual time against the simulator, with both of its
## controls (make test skips the second emulation under -race)
.PHONY: sim-emulate
sim-emulate:
	$(GO) test -run 'TestEmulationAgreesWithSimulator$$' -count=1 -timeout 20m ./simulations/emul/ -v

## sim-national: the simulator's scale run, not run by CI: 10,000 devices for thirty simulated days
## (simulations/scenarios/national-10k.toml), reporting time, events/s and peak memory (peak-MiB).
## SIMFOR=24h runs a shorter stretch of it, to see how time and memory grow from 1,000 devices. It runs
## with GOGC=100 (unless GOGC is set): at this size the larger target sim.Run sets costs more in page
## faults than it saves (two days: 129 s and 5.1 GiB at 100, 141 s and 8.2 GiB at 300), and with the
## heap limited to 21 GiB (unless GOMEMLIMIT is set), past which the collector works harder instead of
## letting the target take the 24 GiB machine. It prints time and memory at each simulated day.
.PHONY: sim-national
sim-national:
	GOGC=$${GOGC:-100} GOMEMLIMIT=$${GOMEMLIMIT:-21GiB} $(GO) test -run '^$$' -bench 'BenchmarkNational10k$$' -benchtime=1x -timeout 0 -v ./simulations/sim/ -sim.national $(if $(SIMFOR),-sim.national.for=$(SIMFOR))

## record-bench: the record gateway's throughput at the issue's size: 10,000 queued messages filed to
## the local FHIR test server (messages/s, bytes a message); make bench runs it with 1,000
.PHONY: record-bench
record-bench: deps
	$(GO) test -run '^$$' -bench 'BenchmarkFile$$' -benchtime=1x -timeout 60m ./node/recordgw/ -recordgw.messages=10000
