#!/bin/sh
# Replace an installed edged with a new binary, check that the new one comes up healthy,
# and go back to the previous one by itself when it does not.
#
# usage:
#   sudo ./upgrade.sh [--bin FILE] [--ort FILE] [--health-url URL] [--timeout SECONDS]
#
#   --bin FILE         the new edged (default: ./edged next to this script)
#   --ort FILE         a new libonnxruntime.so to install with it (default: keep the
#                      installed one)
#   --health-url URL   what must answer 200 (default: /readyz on the config's
#                      http.listen, on 127.0.0.1 when it listens on every interface)
#   --timeout SECONDS  how long the new edged may take to be ready (default 180: the
#                      first start of a TensorRT model builds its engine)
#
# environment:
#   ROOT=DIR           upgrade the edged installed in DIR (see install.sh)
#   SERVICE=direct     start and stop the binary here instead of through systemd (the
#                      default with ROOT; without ROOT and without a running systemd,
#                      upgrade.sh refuses unless it is set)
#
# Steps: the new binary validates the installed config (refused: nothing changes); the
# running binary is kept as edged.prev; the new one replaces it and the service
# restarts; if /readyz does not answer 200 in time, or edged exits, the new binary is
# moved to edged.failed, edged.prev comes back and the service restarts on it.
# Exit status: 0 upgraded, 1 refused or rolled back, 2 the rollback failed too.
set -eu

prog=upgrade.sh
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=deploy.sh
. "$here/deploy.sh"

usage() {
	sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p;}' "$0"
}

bin=""
ort=""
url=""
timeout=180
while [ $# -gt 0 ]; do
	case $1 in
	--bin | --ort | --health-url | --timeout)
		[ $# -ge 2 ] || die "$1 needs a value"
		case $1 in
		--bin) bin=$2 ;;
		--ort) ort=$2 ;;
		--health-url) url=$2 ;;
		--timeout) timeout=$2 ;;
		esac
		shift 2
		;;
	--bin=*) bin=${1#*=} && shift ;;
	--ort=*) ort=${1#*=} && shift ;;
	--health-url=*) url=${1#*=} && shift ;;
	--timeout=*) timeout=${1#*=} && shift ;;
	-h | --help)
		usage
		exit 0
		;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done

# Preflight: nothing changes until every check has passed.
if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
	die "run as root: sudo $0"
fi
case $timeout in
'' | *[!0-9]*) die "--timeout $timeout: want a whole number of seconds" ;;
esac
[ -n "$bin" ] || bin=$here/edged
[ -f "$bin" ] || die "--bin $bin: no such file"
check_elf "$bin" executable
if [ -n "$ort" ]; then
	[ -f "$ort" ] || die "--ort $ort: no such file"
	check_elf "$ort" library
fi
[ "$(service_mode)" != none ] ||
	die "systemd is not running, so there is no service to restart and check; SERVICE=direct runs edged from this script"
[ -f "$bindir/edged" ] || die "${bindir#"$ROOT"}/edged is not installed; run install.sh first"
[ -f "$conffile" ] || die "${conffile#"$ROOT"} is missing; run install.sh first"
if cmp -s "$bin" "$bindir/edged"; then
	say "$bin is the installed edged already; nothing to do"
	exit 0
fi
"$bin" validate -c "$conffile" >/dev/null || die "the new edged ($bin) refuses ${conffile#"$ROOT"}; nothing was changed"
[ -n "$url" ] || url=$(health_url)
new_version=$("$bin" version 2>/dev/null | head -n1 || true)

# Stage next to the targets, so that the swap is renames.
install -m 0755 "$bin" "$bindir/edged.new"
if [ -n "$ort" ]; then
	install -m 0644 "$ort" "$libdir/libonnxruntime.so.1.new"
fi

say "replacing edged (previous kept as ${bindir#"$ROOT"}/edged.prev) with ${new_version:-$bin}"
cp -p "$bindir/edged" "$bindir/edged.prev"
mv -f "$bindir/edged.new" "$bindir/edged"
if [ -n "$ort" ]; then
	if [ -f "$libdir/libonnxruntime.so.1" ]; then
		cp -p "$libdir/libonnxruntime.so.1" "$libdir/libonnxruntime.so.1.prev"
	fi
	mv -f "$libdir/libonnxruntime.so.1.new" "$libdir/libonnxruntime.so.1"
	ln -sfn libonnxruntime.so.1 "$libdir/libonnxruntime.so"
fi

service_restart
say "waiting up to ${timeout}s for $url"
if wait_healthy "$url" "$timeout"; then
	say "upgraded: ${new_version:-edged} is ready"
	exit 0
fi

say "the new edged failed its health check: $why; rolling back to edged.prev" >&2
service_stop
mv -f "$bindir/edged" "$bindir/edged.failed"
cp -p "$bindir/edged.prev" "$bindir/edged"
if [ -n "$ort" ] && [ -f "$libdir/libonnxruntime.so.1.prev" ]; then
	mv -f "$libdir/libonnxruntime.so.1" "$libdir/libonnxruntime.so.1.failed"
	cp -p "$libdir/libonnxruntime.so.1.prev" "$libdir/libonnxruntime.so.1"
fi
service_restart
if wait_healthy "$url" "$timeout"; then
	say "rolled back: the previous edged is ready again; the refused binary is ${bindir#"$ROOT"}/edged.failed" >&2
	exit 1
fi
say "the previous edged is not healthy either: $why; the box needs attention" >&2
exit 2
