#!/bin/sh
# Install edged as a systemd service on a Jetson (or any Linux box: arm64, amd64, riscv64).
# Running it again with the same files changes nothing; to replace a running edged with
# a health check and automatic rollback, use upgrade.sh.
#
# usage:
#   sudo ./install.sh [--bin FILE] [--ort FILE] [--config FILE] [--no-start]
#
#   --bin FILE     edged for this machine (default: ./edged next to this script, else
#                  bin/edged-linux-ARCH or bin/edged in the source tree)
#   --ort FILE     ONNX Runtime's libonnxruntime.so (default: a GPU build already on the
#                  system, else onnxruntime/libonnxruntime.so.1 next to this script as in
#                  a release tarball, else the one `make ort` puts in
#                  third_party/onnxruntime/); riscv64 needs none
#   --config FILE  config installed as /etc/edged/edged.yaml when none is there yet
#                  (default: ./edged.yaml next to this script, else config/demo.yaml)
#   --no-start     install and enable, but do not start (for building images)
#
# environment:
#   ROOT=DIR       install into DIR instead of / (no users, owners or systemctl)
#   CREATE_USER=0  do not create the edged user (default 1, and 0 with ROOT)
#
# The new binary checks the config (`edged validate`) before anything is changed.
set -eu

prog=install.sh
here=$(cd "$(dirname "$0")" && pwd)
# In the source tree, binaries and libraries are found where make puts them.
tree=/nonexistent
if [ -f "$here/../../go.mod" ]; then
	tree=$(cd "$here/../.." && pwd)
fi
# shellcheck source-path=SCRIPTDIR source=deploy.sh
. "$here/deploy.sh"

usage() {
	sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p;}' "$0"
}

# first_file prints the first of its arguments that is a regular file.
first_file() {
	for f in "$@"; do
		if [ -f "$f" ]; then
			echo "$f"
			return 0
		fi
	done
	return 1
}

# put installs SRC as DST with MODE when DST differs, by a rename, so that a running
# edged never sees a half-written file; it prints "changed" when it did.
put() {
	if [ -f "$2" ] && cmp -s "$1" "$2"; then
		chmod "$3" "$2"
		return 0
	fi
	install -m "$3" "$1" "$2.new"
	mv -f "$2.new" "$2"
	echo changed
}

# put_text installs the text on stdin as DST (mode 0644) when it differs.
put_text() {
	tmp=$(mktemp)
	cat >"$tmp"
	mkdir -p "$(dirname "$1")"
	put "$tmp" "$1" 0644
	rm -f "$tmp"
}

# ort_version prints the x.y of a library named libonnxruntime.so.1.x.y, or nothing.
ort_version() {
	case $(basename "$1") in
	libonnxruntime.so.1.*.*) basename "$1" | sed 's/^libonnxruntime\.so\.\([0-9]*\.[0-9]*\).*/\1/' ;;
	esac
}

version_ok() {
	[ -z "$1" ] && return 0
	[ "$(printf '%s\n%s\n' "$ort_min_version" "$1" | sort -V | head -n1)" = "$ort_min_version" ]
}

# system_ort prints a GPU build of ONNX Runtime already on the box: NVIDIA's
# onnxruntime-gpu wheel for JetPack, or a library installed beside its CUDA provider.
# edged loads it where it is, because the providers are found next to the library.
system_ort() {
	for f in "$ROOT"/usr/local/lib/python3*/dist-packages/onnxruntime/capi/libonnxruntime.so.1* \
		"$ROOT"/usr/lib/python3/dist-packages/onnxruntime/capi/libonnxruntime.so.1* \
		"$ROOT"/usr/local/lib/libonnxruntime.so.1* \
		"$ROOT"/usr/lib/*-linux-gnu/libonnxruntime.so.1*; do
		[ -f "$f" ] || continue
		[ -f "$(dirname "$f")/libonnxruntime_providers_cuda.so" ] || continue
		if ! version_ok "$(ort_version "$f")"; then
			say "skipping ${f#"$ROOT"}: ONNX Runtime $(ort_version "$f") is older than $ort_min_version, which edged needs" >&2
			continue
		fi
		echo "$f"
		return 0
	done
	return 1
}

start=1
bin=""
ort=""
config=""
while [ $# -gt 0 ]; do
	case $1 in
	--bin | --ort | --config)
		[ $# -ge 2 ] || die "$1 needs a file"
		case $1 in
		--bin) bin=$2 ;;
		--ort) ort=$2 ;;
		--config) config=$2 ;;
		esac
		shift 2
		;;
	--bin=*) bin=${1#*=} && shift ;;
	--ort=*) ort=${1#*=} && shift ;;
	--config=*) config=${1#*=} && shift ;;
	--no-start) start=0 && shift ;;
	--upgrade) die "--upgrade is now upgrade.sh, which also checks the new edged's health and rolls back" ;;
	-h | --help)
		usage
		exit 0
		;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done

if [ -z "$ROOT" ]; then
	create_user=${CREATE_USER:-1}
else
	create_user=${CREATE_USER:-0}
fi

# Preflight: nothing on the system changes until every check has passed.
if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
	die "run as root: sudo $0"
fi
arch=$(goarch)
if [ -z "$bin" ]; then
	bin=$(first_file "$here/edged" "$tree/bin/edged-linux-$arch" "$tree/bin/edged") ||
		die "no edged binary found; give one with --bin FILE"
fi
[ -f "$bin" ] || die "--bin $bin: no such file"
check_elf "$bin" executable
[ -f "$here/edged.service" ] || die "$here/edged.service: no such file"
[ -f "$here/edged.logrotate" ] || die "$here/edged.logrotate: no such file"

# ONNX Runtime: riscv64 runs the pure-Go backend and needs none.
ort_sys=""
if [ "$arch" != riscv64 ] && [ -z "$ort" ]; then
	if ort_sys=$(system_ort); then
		say "using the GPU build of ONNX Runtime at ${ort_sys#"$ROOT"}"
	else
		ort_sys=""
		case $arch in
		amd64) ortarch=x64 ;;
		*) ortarch=$arch ;;
		esac
		ort=$(first_file "$here/onnxruntime/libonnxruntime.so.1" "$here/libonnxruntime.so.1" "$tree/third_party/onnxruntime/linux-$ortarch/libonnxruntime.so.1") ||
			die "no ONNX Runtime library found; run 'make ort' or give one with --ort FILE"
	fi
fi
if [ -n "$ort" ]; then
	[ -f "$ort" ] || die "--ort $ort: no such file"
	check_elf "$ort" library
	version_ok "$(ort_version "$ort")" || die "--ort $ort: ONNX Runtime $(ort_version "$ort") is older than $ort_min_version, which edged needs"
fi

if [ -f "$conffile" ]; then
	say "keeping the config already in ${conffile#"$ROOT"}"
	[ -z "$config" ] || say "--config $config is not installed: ${conffile#"$ROOT"} exists"
	check=$conffile
else
	if [ -z "$config" ]; then
		config=$(first_file "$here/edged.yaml" "$tree/config/demo.yaml") ||
			die "no config found; give one with --config FILE"
	fi
	[ -f "$config" ] || die "--config $config: no such file"
	check=$config
fi
"$bin" validate -c "$check" >/dev/null || die "edged ($bin) refuses $check; nothing was changed"

# The memory limits follow the board's hardware profile (memory_budget_mb in
# hwprofiles/profiles/*.yaml): MemoryHigh at the budget, MemoryMax half as much again.
model=""
if [ -r "$ROOT/proc/device-tree/model" ]; then
	model=$(tr -d '\000' <"$ROOT/proc/device-tree/model")
fi
case $model in
*"AGX Orin"*) profile=jetson-orin-agx mem_high=8G mem_max=12G ;;
*"Orin NX"*) profile=jetson-orin-nx mem_high=4G mem_max=6G ;;
*"Orin Nano"*) profile=jetson-orin-nano mem_high=2G mem_max=3G ;;
*)
	case $arch in
	amd64) profile=x86-64 mem_high=2G mem_max=3G ;;
	arm64) profile=arm64 mem_high=1G mem_max=1536M ;;
	riscv64) profile=riscv64 mem_high=512M mem_max=768M ;;
	esac
	;;
esac
if [ -n "$model" ] && [ ! -e "$ROOT/etc/nv_tegra_release" ]; then
	say "no /etc/nv_tegra_release: not a Jetson with L4T"
fi
say "board: ${model:-unknown}; memory limits of profile $profile: MemoryHigh=$mem_high MemoryMax=$mem_max"

# Where the config keeps models (and their audit.log) and the spool, on the box.
models_dir=$(state_path "$(yaml_get "$check" models.dir)")
[ "$models_dir" != "$sys_statedir/" ] || models_dir=$sys_statedir/var/models
spool_dir=$(state_path "$(yaml_get "$check" mqtt.spool.dir)")
[ "$spool_dir" != "$sys_statedir/" ] || spool_dir=$sys_statedir/var/spool

# The user and its groups.
if [ "$create_user" = 1 ]; then
	if ! getent passwd "$user" >/dev/null; then
		say "creating system user $user"
		useradd --system --user-group --home-dir "$sys_statedir" --no-create-home \
			--shell /usr/sbin/nologin --comment "edged inspection runtime" "$user"
	fi
	# The GPU device nodes belong to these groups on L4T.
	for g in video render; do
		if getent group "$g" >/dev/null && ! id -nG "$user" | tr ' ' '\n' | grep -qx "$g"; then
			usermod -a -G "$g" "$user"
		fi
	done
else
	say "not creating user $user (CREATE_USER=0${ROOT:+, ROOT is set}); files stay owned by $(id -un)"
fi

# owned DIR MODE makes a folder owned by edged when the user exists, and the folders
# between it and the state folder too, so that edged can create beside it.
owned() {
	install -d -m "$2" "$1"
	[ "$create_user" = 1 ] || return 0
	p=$1
	while :; do
		chown "$user:$user" "$p"
		case $p in
		"$statedir"/*) p=$(dirname "$p") ;;
		*) break ;;
		esac
	done
}

# Folders.
install -d -m 0755 "$bindir" "$libdir" "$(dirname "$unitfile")" "$dropindir" "$(dirname "$logrotatefile")"
owned "$statedir" 0750
for d in "$models_dir" "$spool_dir"; do
	owned "$ROOT$d" 0750
done

changed=""
# The binary; an install over a different one keeps that one as edged.prev.
if [ -f "$bindir/edged" ] && ! cmp -s "$bin" "$bindir/edged"; then
	cp -p "$bindir/edged" "$bindir/edged.prev"
fi
changed=$changed$(put "$bin" "$bindir/edged" 0755)

# ONNX Runtime: the bundled library, or a drop-in naming the system's GPU build.
ortdropin=$dropindir/20-onnxruntime.conf
if [ -n "$ort" ]; then
	changed=$changed$(put "$ort" "$libdir/libonnxruntime.so.1" 0644)
	ln -sfn libonnxruntime.so.1 "$libdir/libonnxruntime.so"
	if [ -f "$ortdropin" ] && grep -qF "$mark" "$ortdropin"; then
		rm -f "$ortdropin"
		changed=${changed}changed
	fi
elif [ -n "$ort_sys" ]; then
	changed=$changed$(put_text "$ortdropin" <<EOF
$mark: the GPU build of ONNX Runtime found on this box.
[Service]
Environment=ONNXRUNTIME_SHARED_LIBRARY_PATH=${ort_sys#"$ROOT"}
EOF
	)
fi

changed=$changed$(put "$here/edged.service" "$unitfile" 0644)

# Drop-ins hold local changes; one without the mark is the administrator's and stays.
memdropin=$dropindir/10-memory.conf
if [ ! -f "$memdropin" ] || grep -qF "$mark" "$memdropin"; then
	changed=$changed$(put_text "$memdropin" <<EOF
$mark for ${model:-this $arch box} (profile $profile).
# Remove this line to keep your own values across installs.
[Service]
MemoryHigh=$mem_high
MemoryMax=$mem_max
EOF
	)
fi

# Models and spool outside the state folder must be writable under ProtectSystem=strict.
pathsdropin=$dropindir/30-paths.conf
extra=""
for d in "$models_dir" "$spool_dir"; do
	case $d in
	"$sys_statedir" | "$sys_statedir"/*) ;;
	*) extra="$extra $d" ;;
	esac
done
if [ -n "$extra" ]; then
	changed=$changed$(put_text "$pathsdropin" <<EOF
$mark: models.dir or mqtt.spool.dir outside $sys_statedir.
[Service]
ReadWritePaths=$extra
EOF
	)
elif [ -f "$pathsdropin" ] && grep -qF "$mark" "$pathsdropin"; then
	rm -f "$pathsdropin"
	changed=${changed}changed
fi

# The model audit log (models.dir/audit.log) is kept 180 days and more.
sed "s|@AUDIT_LOG@|$models_dir/audit.log|; s|@USER@|$user|g" "$here/edged.logrotate" |
	put_text "$logrotatefile" >/dev/null
command -v logrotate >/dev/null 2>&1 || [ -n "$ROOT" ] ||
	say "logrotate is not installed: $models_dir/audit.log grows without rotation (apt-get install -y logrotate)"

# Secrets (MQTT password, admin token) live in the config: readable by edged only.
if [ ! -f "$conffile" ]; then
	install -d -m 0750 "$confdir"
	install -m 0640 "$config" "$conffile"
	if [ "$create_user" = 1 ]; then
		chgrp "$user" "$confdir" "$conffile"
	fi
	say "installed $config as ${conffile#"$ROOT"}"
fi

if [ "$(service_mode)" != systemd ]; then
	if [ -n "$ROOT" ]; then
		say "ROOT is set: systemd is not managing this tree: the service was not enabled or started"
	else
		say "systemd is not running: the service was not enabled or started"
	fi
	exit 0
fi
systemctl daemon-reload
systemctl enable edged >/dev/null 2>&1
if [ "$start" -eq 0 ]; then
	say "edged installed and enabled, not started"
elif [ -n "$changed" ]; then
	systemctl restart edged
	say "edged installed and started; follow it with: journalctl -u edged -f"
else
	systemctl start edged
	say "edged was already installed; it is running"
fi
