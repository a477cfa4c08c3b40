#!/usr/bin/env bash
# Builds edged for 64-bit Arm Linux (Jetson Orin, arm64 servers and boards). cgo stays on:
# the ONNX Runtime backend loads libonnxruntime.so through it, so the build needs
# Debian's cross compiler and the arm64 C library headers.
#
#   cross/build-arm64.sh [OUTPUT]      (default bin/edged-linux-arm64; make build-arm64)
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-bin/edged-linux-arm64}
go_cmd=${GO:-go}

command -v aarch64-linux-gnu-gcc >/dev/null || {
	echo "build-arm64: aarch64-linux-gnu-gcc not found: apt-get install -y gcc-aarch64-linux-gnu libc6-dev-arm64-cross" >&2
	exit 1
}
[ -e /usr/aarch64-linux-gnu/include/stdlib.h ] || {
	echo "build-arm64: the arm64 C library headers are missing (/usr/aarch64-linux-gnu/include): apt-get install -y libc6-dev-arm64-cross" >&2
	exit 1
}

version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
mkdir -p "$(dirname "$out")"
CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC=aarch64-linux-gnu-gcc \
	"$go_cmd" build -trimpath -ldflags "-X main.buildVersion=$version" -o "$out" ./cmd/edged
echo "build-arm64: $out ($version)"
