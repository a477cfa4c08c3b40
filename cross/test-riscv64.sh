#!/usr/bin/env bash
# test-riscv64.sh: the riscv64 check of `make test-riscv64`. ONNX Runtime ships no
# riscv64 library, so edged runs there on its pure-Go backend. This builds the inference
# tests for linux/riscv64 without cgo, runs the pure-Go backend on every bundled demo
# model under qemu-riscv64 (user-mode emulation, run explicitly: no binfmt needed),
# records the inputs and outputs, and checks them natively against ONNX Runtime on
# the same inputs (1e-4 absolute). Then the riscv64 edged binary runs end to end under
# qemu-riscv64: `edged run` on the simulator with the embedded broker, results received
# over MQTT, SIGTERM, exit 0 with every accepted frame accounted for. Bounded: each
# step has a timeout.
#
#   cross/test-riscv64.sh            (make test-riscv64)
set -euo pipefail

cd "$(dirname "$0")/.."
go_cmd=${GO:-go}

need() {
	if ! command -v "$1" >/dev/null 2>&1; then
		echo "test-riscv64: $1 not found; install it: $2" >&2
		exit 1
	fi
}
need "$go_cmd" "Go 1.26 (https://go.dev/dl/)"
need qemu-riscv64 "apt-get install -y qemu-user"
need timeout "apt-get install -y coreutils"
need mosquitto_sub "apt-get install -y mosquitto-clients"

fail() {
	echo "test-riscv64: $*" >&2
	exit 1
}

work=$(mktemp -d)
# shellcheck source=cross/e2e.sh
. "$(dirname "$0")/e2e.sh"
cleanup() {
	if [[ -n "$e2e_pid" ]]; then
		kill "$e2e_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT
total=$SECONDS
record="$work/riscv64.json"

echo "== build: inference tests for linux/riscv64, CGO_ENABLED=0"
start=$SECONDS
if ! CGO_ENABLED=0 GOOS=linux GOARCH=riscv64 timeout 300 "$go_cmd" test -c -o "$work/inference.test" ./inference; then
	echo "test-riscv64: the riscv64 build failed; every file that uses ONNX Runtime (inference/ort.go and the tests that open it) must carry //go:build cgo" >&2
	exit 1
fi
echo "   built in $((SECONDS - start)) s"

echo "== run: pure-Go backend on the demo models under qemu-riscv64"
start=$SECONDS
(cd inference && EDGED_CROSS_OUT="$record" timeout 300 qemu-riscv64 "$work/inference.test" \
	-test.run '^(TestPureGo|TestOpen)' -test.count=1 -test.v) |
	grep -v '^=== RUN'
echo "   emulated run took $((SECONDS - start)) s"
if [[ ! -s "$record" ]]; then
	echo "test-riscv64: the emulated run wrote no record to $record" >&2
	exit 1
fi

echo "== compare: the riscv64 outputs against ONNX Runtime on $("$go_cmd" env GOARCH), same inputs"
EDGED_PUREGO_WANT="$record" timeout 300 "$go_cmd" test -count=1 -run '^TestPureGoMatchesORT$' -v ./inference |
	grep -v '^=== RUN'

if [[ -n "${EDGED_RISCV64_RECORD:-}" ]]; then
	cp "$record" "$EDGED_RISCV64_RECORD"
	echo "   record kept at $EDGED_RISCV64_RECORD"
fi

echo "== edged for riscv64 end to end under qemu-riscv64"
GO="$go_cmd" cross/build-riscv64.sh "$work/edged-linux-riscv64"
seconds=${EDGED_RISCV64_E2E_SECONDS:-8}
cross_e2e riscv64 "$work/e2e" "$seconds" "{}" -- qemu-riscv64 "$work/edged-linux-riscv64"
echo "   $e2e_received results over MQTT in $seconds s ($e2e_ng NG), inference $e2e_infer ms (min max) under emulation; $e2e_counts"
echo "test-riscv64: ok in $((SECONDS - total)) s"
