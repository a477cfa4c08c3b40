# edged build, run and test. `make run` and `make test` do all the set-up on a fresh
# Debian box: they fetch ONNX Runtime from the npm registry and install the test servers.

SHELL := /bin/bash
GO    ?= go
GOARCH_HOST := $(shell $(GO) env GOARCH)

# ONNX Runtime's C library ships inside the onnxruntime-node npm package; the tarball is
# pinned by version and sha256 so a changed upload can never slip into a build.
ORT_VERSION := 1.24.3
ORT_SHA256  := aa1bb5fa261ea68de05dd53efbba210cd7adf2d2850f4c3a201054c74cc78040
ORT_DIR     := third_party/onnxruntime
ORT_TGZ     := $(ORT_DIR)/onnxruntime-node-$(ORT_VERSION).tgz
ORT_LIBS    := $(ORT_DIR)/linux-x64/libonnxruntime.so.1 $(ORT_DIR)/linux-arm64/libonnxruntime.so.1

# Debian packages the test suite runs against: mosquitto; libmodbus with a C compiler
# for the independent Modbus server the tests build from testdata; mbpoll, a Modbus
# client of its own, for the traffic guard's tests.
TEST_DEBS := mosquitto mosquitto-clients libmodbus-dev gcc libc6-dev mbpoll prometheus chromium shellcheck curl systemd \
	qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross

# node-opcua, the independent OPC UA server of the tests (secured endpoints, restarts),
# pinned by its lockfile.
OPCUA_SERVER := drivers/opcua/testdata/nodeserver
# The line page's browser test: playwright-core drives Debian's chromium.
BROWSER_TEST := cmd/edged/testdata/browser

BIN := bin/edged
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GOFLAGS_BUILD := -trimpath -ldflags "-X main.buildVersion=$(VERSION)"

.PHONY: all build run run-plc run-vibration test test-setup fuzz soak bench ort model model-scalar model-vibration clean vet dist build-arm64 test-arm64 build-riscv64 test-riscv64 test-cross

all: build

build: $(BIN)

$(BIN): $(shell find . -name '*.go' -not -path './var/*' -not -path './third_party/*') $(shell find . -path ./var -prune -o -path ./third_party -prune -o \( -name '*.yaml' -o -name '*.onnx' -o -name 'manifest.json' \) -print) go.mod go.sum
	$(GO) build $(GOFLAGS_BUILD) -o $@ ./cmd/edged

ort: $(ORT_LIBS)

$(ORT_TGZ):
	@command -v npm >/dev/null || { echo "npm is needed to fetch ONNX Runtime: apt-get install -y npm"; exit 1; }
	mkdir -p $(ORT_DIR)
	cd $(ORT_DIR) && npm pack --silent onnxruntime-node@$(ORT_VERSION) >/dev/null
	echo "$(ORT_SHA256)  $@" | sha256sum --check --quiet - || { rm -f $@; echo "onnxruntime-node-$(ORT_VERSION).tgz: sha256 mismatch, refusing it"; exit 1; }

$(ORT_LIBS) &: $(ORT_TGZ)
	rm -rf $(ORT_DIR)/package
	tar -xzf $(ORT_TGZ) -C $(ORT_DIR) package/bin/napi-v6/linux/x64/libonnxruntime.so.1 package/bin/napi-v6/linux/arm64/libonnxruntime.so.1
	mkdir -p $(ORT_DIR)/linux-x64 $(ORT_DIR)/linux-arm64
	mv $(ORT_DIR)/package/bin/napi-v6/linux/x64/libonnxruntime.so.1 $(ORT_DIR)/linux-x64/
	mv $(ORT_DIR)/package/bin/napi-v6/linux/arm64/libonnxruntime.so.1 $(ORT_DIR)/linux-arm64/
	rm -rf $(ORT_DIR)/package
	touch $(ORT_LIBS)

# run: the demo line on embedded defaults (see config/demo.yaml).
run: ort $(BIN)
	$(BIN) run -c config/demo.yaml

# run-plc: the PLC demo (config/plc-demo.yaml). The test servers play two machines: the
# libmodbus server a spindle's vibration transmitter on 127.0.0.1:5020 (a bearing fault
# for the last 10 s of every 30 s), node-opcua a press-fit station's PLC on
# 127.0.0.1:4840 (a part every 2 s, every fifth out of the process window); edged
# reads, judges and writes the verdicts back. Ctrl-C stops all three.
PLC_DEMO := var/plc-demo
run-plc: test-setup $(BIN) $(PLC_DEMO)/modbus-server
	@set -e; \
	$(PLC_DEMO)/modbus-server 5020 30 > $(PLC_DEMO)/modbus.log 2>&1 & mb=$$!; \
	XDG_CONFIG_HOME=$(CURDIR)/$(PLC_DEMO) HOME=$(CURDIR)/$(PLC_DEMO) node $(OPCUA_SERVER)/server.js --port 4840 --toggle 1000 --press 1 > $(PLC_DEMO)/opcua.log 2>&1 & ua=$$!; \
	trap 'kill $$mb $$ua 2>/dev/null' EXIT; \
	for i in $$(seq 600); do grep -q '^ready' $(PLC_DEMO)/opcua.log && break; kill -0 $$ua 2>/dev/null || { cat $(PLC_DEMO)/opcua.log; exit 1; }; sleep 0.1; done; \
	echo "PLCs up: Modbus 127.0.0.1:5020, OPC UA opc.tcp://127.0.0.1:4840/edged (parts: tail -f $(PLC_DEMO)/opcua.log)"; \
	$(BIN) run -c config/plc-demo.yaml

# run-vibration: predictive maintenance on a simulated motor (config/vibration-demo.yaml):
# healthy for a minute, then a bearing defect grows; the vibration alert follows.
run-vibration: ort $(BIN)
	$(BIN) run -c config/vibration-demo.yaml

$(PLC_DEMO)/modbus-server: drivers/modbus/testdata/server.c | test-setup
	mkdir -p $(PLC_DEMO)
	gcc -O2 -o $@ $< -lmodbus

test-setup: ort
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing test servers:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	fi
	@if [ ! -d $(OPCUA_SERVER)/node_modules ] || [ $(OPCUA_SERVER)/package-lock.json -nt $(OPCUA_SERVER)/node_modules ]; then \
		echo "installing the OPC UA test server (node-opcua, from $(OPCUA_SERVER)/package-lock.json)"; \
		npm ci --silent --no-audit --no-fund --prefix $(OPCUA_SERVER) && touch $(OPCUA_SERVER)/node_modules; \
	fi
	@if [ ! -d $(BROWSER_TEST)/node_modules ] || [ $(BROWSER_TEST)/package-lock.json -nt $(BROWSER_TEST)/node_modules ]; then \
		echo "installing the browser test driver (playwright-core, from $(BROWSER_TEST)/package-lock.json)"; \
		npm ci --silent --no-audit --no-fund --prefix $(BROWSER_TEST) && touch $(BROWSER_TEST)/node_modules; \
	fi

test: test-setup
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime 15s ./dpi/
	$(MAKE) test-cross

# fuzz: every fuzz target, FUZZTIME each (make test runs their seeds, and the Modbus
# traffic parser's target for 15 s).
FUZZTIME ?= 2m
FUZZ_TARGETS := ./dpi/:FuzzParse ./drivers/modbus/:FuzzDecodeResponse ./drivers/modbus/:FuzzCheckHeader \
	./drivers/opcua/:FuzzValue ./drivers/opcua/:FuzzCheckNodeID ./drivers/httpupload/:FuzzUpload \
	./drivers/imagedir/sniff/:FuzzImage ./config/:FuzzParse ./models/:FuzzParseManifest \
	./inference/:FuzzPreprocessEncoded ./publish/:FuzzDecodeRecord ./publish/:FuzzAppendString ./spool/:FuzzOpen \
	./models/:FuzzVerifyManifest ./models/:FuzzParsePublicKey ./models/swap/:FuzzParseCommand \
	./models/fetch/:FuzzParseContentRange ./models/fetch/:FuzzParseRetryAfter ./linepage/:FuzzResultEvent \
	./hwprofiles/:FuzzParseNVPModel ./hwprofiles/:FuzzParseSysfsInt ./inference/:FuzzPureGoModel
fuzz: test-setup
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t%%:*} $${t##*:} for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$${t##*:}$$" -fuzztime $(FUZZTIME) $${t%%:*}; \
	done

# soak: the long forms of the delivery, overload and model swap tests (minutes, not
# seconds): 1000 swap cycles, 1000 kills of a repository writer, 50 kills of edged
# during a push.
soak: test-setup
	EDGED_SOAK=1 EDGED_SWAP_CYCLES=1000 $(GO) test -race -count=1 -timeout 60m \
		-run 'Outage|Soak|Overload|Delivery|SwapCyclesFlat|KilledDuringPush' ./...

# bench: component benchmarks (rings against channels, batching, the publisher against
# bare paho, the spool, preprocessing, the Modbus driver against a bare goburrow loop,
# OPC UA notifications end to end, image drops and uploads), then the pipeline against
# bare ONNX Runtime runs; ends with the table of ratios, each against its baseline from
# the same run, and fails when one misses its target.
bench: test-setup $(BIN)
	mkdir -p var
	set -o pipefail; $(GO) test -run '^$$' -bench . -benchmem -count 5 ./pipeline/ ./publish/ ./drivers/modbus/ | tee var/bench.txt
	set -o pipefail; $(GO) test -run '^$$' -bench . -benchmem -count 1 ./inference/ ./spool/ ./drivers/sim/ ./drivers/imagedir/ ./drivers/httpupload/ ./drivers/opcua/ ./config/ ./models/ ./models/swap/ | tee -a var/bench.txt
	$(BIN) bench
	$(GO) run ./internal/benchtable < var/bench.txt

# model retrains the bundled demo model from simulator images (needs Debian's
# python3-torch; the build and tests never do).
model: $(BIN)
	rm -rf var/dataset
	$(BIN) sim dump --n 6000 --seed 1 --defect-rate 0.5 --out var/dataset/train
	$(BIN) sim dump --n 2000 --seed 2 --defect-rate 0.5 --out var/dataset/val
	/usr/bin/python3 models/demo/train.py --train var/dataset/train --val var/dataset/val --out models/demo/el-defect/1.0.0

# model-vibration retrains the bundled vibration anomaly model on healthy windows of the
# vibration simulator (python3-torch; about a minute on 2 cores).
model-vibration:
	$(GO) run ./models/demo/vib-anomaly/gen -out var/vib-anomaly
	/usr/bin/python3 models/demo/vib-anomaly/train.py --data var/vib-anomaly

# model-scalar retrains the bundled scalar demo models (vib-iso, press-fit) from
# synthetic line data (Debian's python3-torch and python3-numpy; under a minute).
model-scalar:
	/usr/bin/python3 models/demo/scalar/train_scalar.py --model all

vet:
	$(GO) vet ./...

# build-arm64: edged for arm64 boxes (Jetson), cross-compiled with cgo.
build-arm64:
	VERSION=$(VERSION) GO=$(GO) cross/build-arm64.sh bin/edged-linux-arm64

# test-arm64: the inference tests and the demo models' outputs (against amd64's) under
# qemu-aarch64 with the arm64 ONNX Runtime, then the arm64 edged end to end.
test-arm64: ort
	GO=$(GO) cross/test-arm64.sh

# build-riscv64: edged for RISC-V boards: static, without cgo, with the pure-Go backend.
build-riscv64:
	VERSION=$(VERSION) GO=$(GO) cross/build-riscv64.sh bin/edged-linux-riscv64

# test-riscv64: the pure-Go backend on the demo models under qemu-riscv64, its outputs
# against ONNX Runtime's on amd64, then the riscv64 edged end to end.
test-riscv64: ort
	GO=$(GO) cross/test-riscv64.sh

# test-cross: the arm64 and riscv64 checks under emulation (make test runs them).
test-cross: test-arm64 test-riscv64

# dist: release tarballs dist/edged-$(VERSION)-linux-{amd64,arm64,riscv64}.tar.gz with
# dist/SHA256SUMS (arm64 needs Debian's gcc-aarch64-linux-gnu; riscv64 builds without cgo).
dist: ort
	VERSION=$(VERSION) GO=$(GO) deploy/dist.sh

clean:
	rm -rf bin var dist
