# What install.sh, upgrade.sh and uninstall.sh share: the installed layout, checks of
# binaries, reading the config, and starting and stopping the service. Sourced, not run.
#
# ROOT (default empty) prefixes every path the scripts write or read on the target, so
# that they can be run against a folder that stands in for a box's file system. With ROOT
# set, or when systemd is not running, there is no systemctl: SERVICE=direct makes
# upgrade.sh and uninstall.sh start and stop the binary themselves (pid in
# $ROOT/run/edged/edged.pid).
# The variables are read by the scripts that source this file; prog is theirs.
# shellcheck shell=sh disable=SC2034,SC2154

ROOT=${ROOT:-}
ROOT=${ROOT%/}

# Paths as the box sees them (what goes into unit files and configs) ...
sys_bindir=/usr/local/bin
sys_libdir=/usr/local/lib/edged
sys_confdir=/etc/edged
sys_statedir=/var/lib/edged
# ... and where the scripts find them.
bindir=$ROOT$sys_bindir
libdir=$ROOT$sys_libdir
confdir=$ROOT$sys_confdir
conffile=$confdir/edged.yaml
statedir=$ROOT$sys_statedir
unitfile=$ROOT/etc/systemd/system/edged.service
dropindir=$ROOT/etc/systemd/system/edged.service.d
logrotatefile=$ROOT/etc/logrotate.d/edged
rundir=$ROOT/run/edged
pidfile=$rundir/edged.pid
user=edged

# The oldest ONNX Runtime edged can load: onnxruntime_go asks for C API version 24.
ort_min_version=1.24

# Lines the scripts wrote carry this mark; files without it are the administrator's.
mark="# Written by edged's install.sh"

die() {
	echo "$prog: $*" >&2
	exit 1
}

say() {
	echo "$prog: $*"
}

# service_mode prints how the service is run: systemd; direct when ROOT is set (a folder
# standing in for a box: the scripts start and stop edged themselves); none when systemd
# is not running on this box (containers, chroots), where the scripts start nothing.
# SERVICE=systemd|direct overrides it.
service_mode() {
	if [ -n "${SERVICE:-}" ]; then
		echo "$SERVICE"
	elif [ -n "$ROOT" ]; then
		echo direct
	elif [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		echo systemd
	else
		echo none
	fi
}

# goarch prints Go's name for this machine's architecture.
goarch() {
	case $(uname -m) in
	x86_64 | amd64) echo amd64 ;;
	aarch64 | arm64) echo arm64 ;;
	riscv64) echo riscv64 ;;
	*) die "this machine is $(uname -m); edged runs on amd64, arm64 and riscv64" ;;
	esac
}

# elf_arch prints the Go architecture of a 64-bit little-endian ELF file (magic 7f 45 4c
# 46, class 2, data 1; e_machine at byte 18: 0x3e x86-64, 0xb7 AArch64, 0xf3 RISC-V),
# or fails.
elf_arch() {
	[ "$(od -An -tx1 -N6 "$1" | tr -d ' \n')" = 7f454c460201 ] || return 1
	case $(od -An -tx1 -j18 -N2 "$1" | tr -d ' \n') in
	3e00) echo amd64 ;;
	b700) echo arm64 ;;
	f300) echo riscv64 ;;
	*) return 1 ;;
	esac
}

# check_elf fails unless FILE is an ELF file for this machine; WHAT names it in the error.
check_elf() {
	want=$(goarch)
	got=$(elf_arch "$1") || die "$1: not a 64-bit ELF $2 for $want"
	[ "$got" = "$want" ] || die "$1: $2 for $got; this machine is $want"
}

# yaml_get prints the value of a dotted key (http.listen, mqtt.spool.dir) of a block-style
# YAML file, unquoted, or nothing. It reads mappings only, which is all the keys it is
# asked for need; edged itself decodes the config strictly.
yaml_get() {
	[ -r "$1" ] || return 0
	awk -v want="$2" '
	/^[[:space:]]*(#|$)/ || /^[[:space:]]*- / { next }
	{
		match($0, /^ */); ind = RLENGTH
		line = substr($0, ind + 1)
		if (index(line, ":") == 0) next
		k = line; sub(/:.*/, "", k)
		v = line; sub(/^[^:]*:[[:space:]]*/, "", v); sub(/[[:space:]]+#.*$/, "", v)
		while (n > 0 && ind <= inds[n]) n--
		n++; inds[n] = ind; keys[n] = k
		path = keys[1]; for (i = 2; i <= n; i++) path = path "." keys[i]
		if (path == want && v != "") {
			gsub(/^["\047]|["\047]$/, "", v); print v; exit
		}
	}' "$1"
}

# state_path prints where a config path (models.dir, mqtt.spool.dir) lies on the box:
# relative ones resolve under the service's working directory.
state_path() {
	case $1 in
	/*) echo "$1" ;;
	*) echo "$sys_statedir/${1#./}" ;;
	esac
}

# health_url prints the /readyz URL of the installed config's http.listen.
health_url() {
	listen=$(yaml_get "$conffile" http.listen)
	[ -n "$listen" ] || listen=127.0.0.1:8080
	host=${listen%:*}
	port=${listen##*:}
	case $host in
	"" | 0.0.0.0 | "[::]" | ::) host=127.0.0.1 ;;
	esac
	echo "http://$host:$port/readyz"
}

probe() {
	if command -v curl >/dev/null 2>&1; then
		curl -fsS -m 2 -o /dev/null "$1" 2>/dev/null
	elif command -v wget >/dev/null 2>&1; then
		wget -q -T 2 -O /dev/null "$1" 2>/dev/null
	else
		die "neither curl nor wget to check $1: apt-get install -y curl"
	fi
}

# pid_alive reports whether a pid is a live process; a zombie (an exited child this shell
# has not reaped) is dead.
pid_alive() {
	[ -r "/proc/$1/stat" ] || return 1
	state=$(sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f1)
	[ "$state" != Z ]
}

direct_stop() {
	[ -f "$pidfile" ] || return 0
	pid=$(cat "$pidfile")
	if pid_alive "$pid"; then
		kill -TERM "$pid" 2>/dev/null || true
		# edged stops within shutdown_timeout (10s by default); the unit waits 30s.
		i=0
		while pid_alive "$pid" && [ $i -lt 300 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		if pid_alive "$pid"; then
			say "edged (pid $pid) did not stop in 30s: killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	wait "$pid" 2>/dev/null || true
	rm -f "$pidfile"
}

direct_start() {
	mkdir -p "$rundir" "$statedir"
	lib=$libdir/libonnxruntime.so
	(
		cd "$statedir" || exit 1
		if [ -e "$lib" ]; then
			ONNXRUNTIME_SHARED_LIBRARY_PATH=$lib
			export ONNXRUNTIME_SHARED_LIBRARY_PATH
		fi
		exec "$bindir/edged" run -c "$conffile" </dev/null >>"$statedir/edged.log" 2>&1
	) &
	echo $! >"$pidfile"
}

service_stop() {
	case $(service_mode) in
	systemd) systemctl stop edged ;;
	direct) direct_stop ;;
	none) die "systemd is not running: cannot stop edged (SERVICE=direct stops one this script started)" ;;
	esac
}

service_restart() {
	case $(service_mode) in
	systemd) systemctl restart edged ;;
	direct)
		direct_stop
		direct_start
		;;
	none) die "systemd is not running: cannot restart edged (SERVICE=direct runs it from this script)" ;;
	esac
}

service_restarts() {
	systemctl show -p NRestarts --value edged 2>/dev/null || echo 0
}

# wait_healthy waits up to SECONDS for URL to answer 200, and fails at once when the
# service has exited (direct) or systemd has had to restart it.
wait_healthy() {
	url=$1
	limit=$2
	mode=$(service_mode)
	restarts0=0
	[ "$mode" = direct ] || restarts0=$(service_restarts)
	end=$(($(date +%s) + limit))
	while :; do
		if probe "$url"; then
			return 0
		fi
		case $mode in
		direct)
			if ! pid_alive "$(cat "$pidfile" 2>/dev/null || echo 0)"; then
				why="edged exited (see $statedir/edged.log)"
				return 1
			fi
			;;
		systemd)
			if [ "$(service_restarts)" != "$restarts0" ] || systemctl is-failed --quiet edged; then
				why="edged exited and systemd restarted it (see journalctl -u edged)"
				return 1
			fi
			;;
		esac
		if [ "$(date +%s)" -ge "$end" ]; then
			why="$url did not answer 200 within ${limit}s"
			return 1
		fi
		sleep 0.2
	done
}

case ${SERVICE:-} in
"" | systemd | direct) ;;
*) die "SERVICE=$SERVICE: want systemd or direct" ;;
esac
