#!/usr/bin/env bash
# Builds edged for 64-bit RISC-V Linux. ONNX Runtime ships no riscv64 library, so cgo
# is off and the binary carries only the pure-Go backend (runtime.backend auto picks
# it): a static binary that needs no cross compiler and no C library on the board.
#
#   cross/build-riscv64.sh [OUTPUT]    (default bin/edged-linux-riscv64; make build-riscv64)
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-bin/edged-linux-riscv64}
go_cmd=${GO:-go}

version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
mkdir -p "$(dirname "$out")"
CGO_ENABLED=0 GOOS=linux GOARCH=riscv64 \
	"$go_cmd" build -trimpath -ldflags "-X main.buildVersion=$version" -o "$out" ./cmd/edged
echo "build-riscv64: $out ($version)"
