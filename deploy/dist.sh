#!/usr/bin/env bash
# Release tarballs: dist/edged-VERSION-linux-{amd64,arm64,riscv64}.tar.gz and
# dist/SHA256SUMS. Each holds one folder with the binary, ONNX Runtime's library (none
# for riscv64, which runs the pure-Go backend), the install, upgrade and uninstall
# scripts with the systemd unit, the container file, the demo config as edged.yaml, and
# the READMEs; unpacked on a box, `sudo ./install.sh` in that folder installs it.
#
# usage: deploy/dist.sh   (from the source tree's root; `make dist` runs it)
#
# environment:
#   VERSION        release name (default: git describe, else dev)
#   ARCHES         which to build (default "amd64 arm64 riscv64")
#   RISCV64_TAGS   build tags for riscv64, which builds with CGO_ENABLED=0
#   GO             the go command (default go)
#
# amd64 and arm64 link ONNX Runtime through cgo: arm64 needs Debian's
# gcc-aarch64-linux-gnu and libc6-dev-arm64-cross on an amd64 host, both need `make ort`.
# The tarballs are reproducible: files sorted, owned by 0:0, dated by the last commit.
set -euo pipefail

cd "$(dirname "$0")/.."
GO=${GO:-go}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
ARCHES=${ARCHES:-amd64 arm64 riscv64}
RISCV64_TAGS=${RISCV64_TAGS:-}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
host=$($GO env GOHOSTARCH)
out=dist
work=$out/.build

die() {
	echo "dist.sh: $*" >&2
	exit 1
}

# cc_for prints the C compiler for a cgo build for ARCH on this host.
cc_for() {
	local cc
	if [ "$1" = "$host" ]; then
		cc=${CC:-gcc}
	else
		case $1 in
		amd64) cc=x86_64-linux-gnu-gcc ;;
		arm64) cc=aarch64-linux-gnu-gcc ;;
		esac
	fi
	command -v "$cc" >/dev/null 2>&1 || case $1 in
	arm64) die "$cc not found, needed for the cgo build for arm64: apt-get install -y gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;;
	amd64) die "$cc not found, needed for the cgo build for amd64: apt-get install -y gcc-x86-64-linux-gnu" ;;
	esac
	echo "$cc"
}

build() {
	local arch=$1 dir=$2 ortarch
	local ldflags="-X main.buildVersion=$VERSION"
	case $arch in
	amd64 | arm64)
		CGO_ENABLED=1 GOOS=linux GOARCH=$arch CC=$(cc_for "$arch") \
			$GO build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$dir/edged" ./cmd/edged ||
			die "go build for linux/$arch failed"
		ortarch=$arch
		[ "$arch" = amd64 ] && ortarch=x64
		local lib=third_party/onnxruntime/linux-$ortarch/libonnxruntime.so.1
		[ -f "$lib" ] || die "$lib: missing; run make ort"
		install -D -m 0644 "$lib" "$dir/onnxruntime/libonnxruntime.so.1"
		;;
	riscv64)
		CGO_ENABLED=0 GOOS=linux GOARCH=riscv64 \
			$GO build -trimpath -buildvcs=false -tags "$RISCV64_TAGS" -ldflags "$ldflags" -o "$dir/edged" ./cmd/edged ||
			die "go build for linux/riscv64 with CGO_ENABLED=0 failed: edged needs its pure-Go backend there"
		;;
	*) die "ARCHES: unknown architecture $arch (amd64, arm64, riscv64)" ;;
	esac
}

rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
tarballs=()
for arch in $ARCHES; do
	name=edged-$VERSION-linux-$arch
	dir=$work/$name
	echo "dist.sh: building $name"
	mkdir -p "$dir"
	build "$arch" "$dir"
	install -m 0755 deploy/jetson/install.sh deploy/jetson/upgrade.sh deploy/jetson/uninstall.sh "$dir/"
	install -m 0644 deploy/jetson/deploy.sh deploy/jetson/edged.service deploy/jetson/edged.logrotate \
		deploy/jetson/Containerfile "$dir/"
	install -m 0644 deploy/jetson/README.md "$dir/README.deploy.md"
	install -m 0644 README.md "$dir/README.md"
	install -m 0644 config/demo.yaml "$dir/edged.yaml"
	if [ -f LICENSE ]; then
		install -m 0644 LICENSE "$dir/LICENSE"
	fi
	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
		-C "$work" -cf - "$name" | gzip -9n >"$out/$name.tar.gz"
	tarballs+=("$name.tar.gz")
done
(cd "$out" && sha256sum "${tarballs[@]}" >SHA256SUMS)
echo "dist.sh: wrote $out/SHA256SUMS:"
cat "$out/SHA256SUMS"
