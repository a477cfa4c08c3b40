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
# shellcheck source=cross/e2e.sh
. "$root/cross/e2e.sh"
trap 'if [ -n "$e2e_pid" ]; then kill "$e2e_pid" 2>/dev/null || true; fi' EXIT

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
cross_e2e arm64 "$root/$work/e2e" "$e2e_seconds" "{ort_library: \"$ort_lib\"}" -- \
	qemu-aarch64 -L "$sysroot" bin/edged-linux-arm64

echo "== arm64 summary"
grep -h 'cross: arm64' "$work/arm64.log" | sed 's/^ *//'
echo "end to end: $e2e_received results received over MQTT in $e2e_seconds s ($e2e_ng NG); stopped with $e2e_counts; exit 0 after SIGTERM"
echo "test-arm64: ok in $((SECONDS - start)) s"
