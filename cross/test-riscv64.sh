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
edged_pid=
cleanup() {
	if [[ -n "$edged_pid" ]]; then
		kill "$edged_pid" 2>/dev/null || true
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
# A port nothing listens on: the embedded broker's clients must know its port.
mqtt_port=
for _ in $(seq 50); do
	p=$((20000 + RANDOM % 40000))
	if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		mqtt_port=$p
		break
	fi
done
[[ -n "$mqtt_port" ]] || fail "no free TCP port found on 127.0.0.1"
e2e=$work/e2e
mkdir -p "$e2e"
cat >"$e2e/edged.yaml" <<YAML
node: {site: cross, line: riscv64, name: qemu}
hwprofile: auto
log: {level: info, format: json}
http: {listen: "127.0.0.1:0"}
mqtt: {broker: embedded, embedded_listen: "127.0.0.1:$mqtt_port", connect_timeout: 5s, spool: {dir: "$e2e/spool"}}
models: {dir: "$e2e/models"}
shutdown_timeout: 20s
sources:
  - name: cam
    type: sim
    verdict_budget: 10s
    # One image a second: the pure-Go backend infers one in well under a second
    # under emulation, so the ring stays short and drains at shutdown.
    sim: {rate_hz: 1, seed: 7, defect_rate: 0.3}
inspections:
  - name: el
    source: cam
    model: el-defect
YAML
qemu-riscv64 "$work/edged-linux-riscv64" run -c "$e2e/edged.yaml" >"$e2e/edged.log" 2>&1 &
edged_pid=$!
for _ in $(seq 600); do
	grep -q '"msg":"edged started"' "$e2e/edged.log" && break
	kill -0 "$edged_pid" 2>/dev/null || {
		cat "$e2e/edged.log"
		fail "edged (riscv64) exited before it started"
	}
	sleep 0.1
done
grep '"msg":"edged started"' "$e2e/edged.log" || {
	cat "$e2e/edged.log"
	fail "edged (riscv64) did not log \"edged started\" within 60 s"
}
seconds=${EDGED_RISCV64_E2E_SECONDS:-8}
# -W ends mosquitto_sub with status 27 when its time is up.
timeout $((seconds + 10)) mosquitto_sub -h 127.0.0.1 -p "$mqtt_port" -q 1 -v \
	-t 'edged/v1/cross/riscv64/qemu/result/#' -W "$seconds" >"$e2e/results.txt" 2>"$e2e/sub.log" || true
kill -TERM "$edged_pid"
timeout 60 tail --pid="$edged_pid" -f /dev/null || fail "edged (riscv64) still runs 60 s after SIGTERM"
rc=0
wait "$edged_pid" || rc=$?
edged_pid=
[[ "$rc" == 0 ]] || {
	cat "$e2e/edged.log"
	fail "edged (riscv64) exited with status $rc after SIGTERM, want 0"
}
stopped=$(grep '"msg":"edged stopped"' "$e2e/edged.log") || {
	cat "$e2e/edged.log"
	fail "edged (riscv64) exited without its \"edged stopped\" line"
}
echo "$stopped"
received=$(grep -c '"verdict":' "$e2e/results.txt" || true)
ng=$(grep -c '"verdict":"NG"' "$e2e/results.txt" || true)
[[ "$received" -gt 0 ]] || {
	cat "$e2e/sub.log" "$e2e/edged.log"
	fail "no result reached mosquitto_sub in $seconds s"
}
grep -q '"model":{"name":"el-defect"' "$e2e/results.txt" || fail "results do not name the el-defect model: $(head -c 400 "$e2e/results.txt")"
infer=$(sed -n 's/.*"infer":\([0-9.]*\).*/\1/p' "$e2e/results.txt" | sort -n | sed -n '1p;$p' | tr '\n' ' ')
# Every accepted frame was published or dropped for a reason.
counts=$(sed -n 's/.*"cam":"\([^"]*\)".*/\1/p' <<<"$stopped")
declare -A n=()
for kv in $counts; do n[${kv%%=*}]=${kv#*=}; done
for k in accepted published dropped_full dropped_stale error dropped_shutdown; do
	[[ -n "${n[$k]:-}" ]] || fail "the stopped line has no $k count: $stopped"
done
sum=$((n[published] + n[dropped_full] + n[dropped_stale] + n[error] + n[dropped_shutdown]))
[[ "$sum" == "${n[accepted]}" ]] || fail "accepted=${n[accepted]} but published and dropped add up to $sum: $counts"
echo "   $received results over MQTT in $seconds s ($ng NG), inference ${infer% } ms (min max) under emulation; $counts"
echo "test-riscv64: ok in $((SECONDS - total)) s"
