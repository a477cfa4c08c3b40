#!/usr/bin/env bash
# Checks edged on 64-bit Arm under emulation (qemu-user), with the arm64 ONNX Runtime
# library `make ort` fetched:
#   1. the inference package's tests that run real models, cross-compiled for arm64;
#   2. the demo models' outputs on arm64 against amd64 on the same inputs (largest
#      absolute difference at most EDGED_CROSS_TOL, default 1e-4);
#   3. the arm64 edged binary end to end: `edged run` on the simulator with the embedded
#      broker, results received over MQTT, SIGTERM, exit 0.
#
#   cross/test-arm64.sh                        (make test-arm64)
#   EDGED_ARM64_FULL=1 cross/test-arm64.sh     also the demo model's accuracy and the
#                                              partial batch tests (about 100 s more)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

go_cmd=${GO:-go}
work=var/cross/arm64
ort_lib=$root/third_party/onnxruntime/linux-arm64/libonnxruntime.so.1
sysroot=/usr/aarch64-linux-gnu
e2e_seconds=${EDGED_ARM64_E2E_SECONDS:-8}

fail() {
	echo "test-arm64: $*" >&2
	exit 1
}

# Every tool is checked before anything runs, so one message names all that is missing.
missing=()
command -v qemu-aarch64 >/dev/null || missing+=("qemu-user (qemu-aarch64)")
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=("gcc-aarch64-linux-gnu (aarch64-linux-gnu-gcc)")
[ -e "$sysroot/lib/ld-linux-aarch64.so.1" ] && [ -e "$sysroot/include/stdlib.h" ] ||
	missing+=("libc6-dev-arm64-cross ($sysroot)")
command -v mosquitto_sub >/dev/null || missing+=("mosquitto-clients (mosquitto_sub)")
if [ ${#missing[@]} -gt 0 ]; then
	pkgs=$(printf '%s\n' "${missing[@]}" | cut -d' ' -f1 | tr '\n' ' ')
	fail "missing: ${missing[*]}; apt-get install -y ${pkgs% }"
fi
[ -f "$ort_lib" ] || fail "$ort_lib not found: run \`make ort\`"

rm -rf "$work"
mkdir -p "$work"
start=$SECONDS

# The tests under emulation: the ONNX Runtime tests and the pure-Go pre- and
# post-processing ones. TestCrossOutputs holds the demo models' arm64 outputs to amd64's
# on the same inputs, so the slow ones under qemu run only with EDGED_ARM64_FULL=1:
# TestDemoModelAccuracy (400 images, about a minute) and TestPartialBatch (about 40 s).
tests='^(TestCrossOutputs|TestFindORTLibraryOrder|TestLoadRefusesMismatchedManifest|TestBatchBounds|TestAreaResizeMatchesAdaptivePooling|TestPreprocessPNGEqualsRaw|TestPreprocessBadInput|TestPreprocessScalars|TestPostprocess|TestPostprocessScore)$'
if [ "${EDGED_ARM64_FULL:-}" = 1 ]; then
	tests=${tests%)\$}'|TestPartialBatch|TestDemoModelAccuracy)$'
fi

echo "== arm64 build (cgo, aarch64-linux-gnu-gcc)"
cross/build-arm64.sh bin/edged-linux-arm64
CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC=aarch64-linux-gnu-gcc \
	"$go_cmd" test -c -o "$work/inference.test" ./inference/
echo "built in $((SECONDS - start)) s"

echo "== amd64 reference outputs"
EDGED_CROSS_OUT=$root/$work/native.json "$go_cmd" test -count=1 -run '^TestCrossOutputs$' -v ./inference/ >"$work/native.log" 2>&1 ||
	{
		cat "$work/native.log"
		fail "the native run of TestCrossOutputs failed"
	}
grep -E 'cross: ' "$work/native.log" | sed 's/^ *//'

echo "== arm64 inference tests under qemu-aarch64"
# go test runs a package's tests in its folder; so does this.
if ! (cd inference && EDGED_CROSS_WANT=$root/$work/native.json EDGED_CROSS_OUT=$root/$work/arm64.json \
	ONNXRUNTIME_SHARED_LIBRARY_PATH=$ort_lib \
	timeout 240 qemu-aarch64 -L "$sysroot" "$root/$work/inference.test" \
	-test.run "$tests" -test.short -test.count=1 -test.v -test.timeout 230s) >"$work/arm64.log" 2>&1; then
	cat "$work/arm64.log"
	fail "the arm64 inference tests failed under qemu-aarch64 (log: $work/arm64.log)"
fi
grep -E '^(--- |ok|PASS)|cross: ' "$work/arm64.log" | sed 's/^ *//'

echo "== arm64 edged end to end under qemu-aarch64"
# A port nothing listens on; the embedded broker refuses port 0 (clients must know it).
free_port() {
	local p
	for _ in $(seq 50); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	fail "no free TCP port found on 127.0.0.1"
}
mqtt_port=$(free_port)
e2e=$root/$work/e2e
mkdir -p "$e2e"
cat >"$e2e/edged.yaml" <<YAML
node: {site: cross, line: arm64, name: qemu}
hwprofile: auto
log: {level: info, format: json}
runtime: {ort_library: "$ort_lib"}
http: {listen: "127.0.0.1:0"}
mqtt: {broker: embedded, embedded_listen: "127.0.0.1:$mqtt_port", connect_timeout: 5s, spool: {dir: "$e2e/spool"}}
models: {dir: "$e2e/models"}
shutdown_timeout: 20s
sources:
  - name: cam
    type: sim
    verdict_budget: 10s
    # One image a second: about what one worker infers under emulation, so the ring
    # stays short and drains well within shutdown_timeout.
    sim: {rate_hz: 1, seed: 7, defect_rate: 0.3}
inspections:
  - name: el
    source: cam
    model: el-defect
YAML

qemu-aarch64 -L "$sysroot" bin/edged-linux-arm64 run -c "$e2e/edged.yaml" >"$e2e/edged.log" 2>&1 &
edged_pid=$!
sub_pid=
cleanup() {
	[ -n "$sub_pid" ] && kill "$sub_pid" 2>/dev/null
	kill "$edged_pid" 2>/dev/null || true
}
trap cleanup EXIT

# ONNX Runtime takes seconds to load under emulation: wait for the started line.
for _ in $(seq 1200); do
	grep -q '"msg":"edged started"' "$e2e/edged.log" && break
	kill -0 "$edged_pid" 2>/dev/null || {
		cat "$e2e/edged.log"
		fail "edged (arm64) exited before it started"
	}
	sleep 0.1
done
grep -q '"msg":"edged started"' "$e2e/edged.log" || {
	cat "$e2e/edged.log"
	fail "edged (arm64) did not log \"edged started\" within 120 s"
}
grep '"msg":"edged started"' "$e2e/edged.log"

timeout $((e2e_seconds + 10)) mosquitto_sub -h 127.0.0.1 -p "$mqtt_port" -q 1 -v \
	-t 'edged/v1/cross/arm64/qemu/result/#' -W "$e2e_seconds" >"$e2e/results.txt" 2>"$e2e/sub.log" &
sub_pid=$!
wait "$sub_pid" || true # -W ends it with status 27 when its time is up
sub_pid=

kill -TERM "$edged_pid"
rc=0
timeout 60 tail --pid="$edged_pid" -f /dev/null || fail "edged (arm64) still runs 60 s after SIGTERM"
wait "$edged_pid" || rc=$?
trap - EXIT
[ "$rc" = 0 ] || {
	cat "$e2e/edged.log"
	fail "edged (arm64) exited with status $rc after SIGTERM, want 0"
}
stopped=$(grep '"msg":"edged stopped"' "$e2e/edged.log") || {
	cat "$e2e/edged.log"
	fail "edged (arm64) exited without its \"edged stopped\" line"
}
echo "$stopped"

received=$(grep -c '"verdict":' "$e2e/results.txt" || true)
ng=$(grep -c '"verdict":"NG"' "$e2e/results.txt" || true)
[ "$received" -gt 0 ] || {
	cat "$e2e/sub.log" "$e2e/edged.log"
	fail "no result reached mosquitto_sub in $e2e_seconds s"
}
grep -q '"model":{"name":"el-defect"' "$e2e/results.txt" || fail "results do not name the el-defect model: $(head -c 400 "$e2e/results.txt")"
# The stopped line's counts: every accepted frame published or dropped for a reason.
counts=$(sed -n 's/.*"cam":"\([^"]*\)".*/\1/p' <<<"$stopped")
declare -A n=()
for kv in $counts; do n[${kv%%=*}]=${kv#*=}; done
for k in accepted published dropped_full dropped_stale error dropped_shutdown; do
	[ -n "${n[$k]:-}" ] || fail "the stopped line has no $k count: $stopped"
done
published=${n[published]}
if [ "$published" -lt "$received" ]; then
	fail "the stopped line counts published=$published, fewer than the $received results received"
fi
sum=$((published + n[dropped_full] + n[dropped_stale] + n[error] + n[dropped_shutdown]))
[ "$sum" = "${n[accepted]}" ] || fail "accepted=${n[accepted]} but published and dropped add up to $sum: $counts"

echo "== arm64 summary"
grep -h 'cross: arm64' "$work/arm64.log" | sed 's/^ *//'
echo "end to end: $received results received over MQTT in $e2e_seconds s ($ng NG); stopped with $counts; exit 0 after SIGTERM"
echo "test-arm64: ok in $((SECONDS - start)) s"
