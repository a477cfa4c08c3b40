#!/bin/sh
# Install or upgrade edged as a systemd service on a Jetson (or any arm64 Linux box).
#
# usage:
#   sudo ./install.sh [--bin FILE] [--ort FILE] [--config FILE] [--no-start]
#   sudo ./install.sh --upgrade [--bin FILE] [--ort FILE]
#
#   --bin FILE     edged built for linux/arm64 (default: ./edged next to this script,
#                  else bin/edged-linux-arm64 or bin/edged in the source tree)
#   --ort FILE     ONNX Runtime's libonnxruntime.so for arm64 (default:
#                  ./libonnxruntime.so.1 next to this script, else the one `make ort`
#                  puts in third_party/onnxruntime/linux-arm64/)
#   --config FILE  config installed as /etc/edged/edged.yaml when none is there yet
#                  (default: ./edged.yaml next to this script, else config/demo.yaml)
#   --upgrade      replace binary, library and unit of an installed edged; the config
#                  and any drop-ins stay; the service is stopped only for the swap
#   --no-start     install and enable, but do not start (for building images)
#
# The new binary checks the config (`edged validate`) before anything is replaced, so a
# config the new version refuses leaves the running one untouched. The binary it replaces
# stays as /usr/local/bin/edged.prev.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
tree=$(cd "$here/../.." && pwd)

bindir=/usr/local/bin
libdir=/usr/local/lib/edged
confdir=/etc/edged
conffile=$confdir/edged.yaml
unitfile=/etc/systemd/system/edged.service
dropin=/etc/systemd/system/edged.service.d/10-memory.conf
user=edged
home=/var/lib/edged

die() {
	echo "install.sh: $*" >&2
	exit 1
}

say() {
	echo "install.sh: $*"
}

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

# is_arm64_elf reports whether a file is a 64-bit ELF for AArch64: magic 7f 45 4c 46,
# class 2 (64-bit) at byte 4, and e_machine 183 (0xb7, little-endian) at byte 18.
is_arm64_elf() {
	[ "$(od -An -tx1 -N5 "$1" | tr -d ' \n')" = 7f454c4602 ] &&
		[ "$(od -An -tx1 -j18 -N2 "$1" | tr -d ' \n')" = b700 ]
}

args=$*
upgrade=0
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
	--upgrade) upgrade=1 && shift ;;
	--no-start) start=0 && shift ;;
	-h | --help)
		usage
		exit 0
		;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done

# Preflight: nothing on the system changes until every check has passed.
[ "$(id -u)" -eq 0 ] || die "run as root: sudo $0 $args"
case $(uname -m) in
aarch64 | arm64) ;;
*) die "this machine is $(uname -m); edged's Jetson install is for arm64 (aarch64)" ;;
esac
command -v systemctl >/dev/null 2>&1 || die "systemctl not found: edged installs as a systemd service"

if [ -z "$bin" ]; then
	bin=$(first_file "$here/edged" "$tree/bin/edged-linux-arm64" "$tree/bin/edged") ||
		die "no edged binary found; give one with --bin FILE"
fi
if [ -z "$ort" ]; then
	ort=$(first_file "$here/libonnxruntime.so.1" "$tree/third_party/onnxruntime/linux-arm64/libonnxruntime.so.1") ||
		die "no ONNX Runtime library found; run 'make ort' or give one with --ort FILE"
fi
[ -f "$bin" ] || die "$bin: no such file"
[ -f "$ort" ] || die "$ort: no such file"
is_arm64_elf "$bin" || die "$bin is not an arm64 (aarch64) executable"
is_arm64_elf "$ort" || die "$ort is not an arm64 (aarch64) library"
[ -f "$here/edged.service" ] || die "$here/edged.service: no such file"

if [ "$upgrade" -eq 1 ]; then
	if [ ! -f "$bindir/edged" ] || [ ! -f "$unitfile" ]; then
		die "edged is not installed; run without --upgrade"
	fi
	[ -z "$config" ] || die "--upgrade keeps $conffile; --config applies to a first install"
	[ -f "$conffile" ] || die "$conffile is missing; run without --upgrade to install one"
	check=$conffile
elif [ -f "$conffile" ]; then
	say "keeping the config already in $conffile"
	check=$conffile
else
	if [ -z "$config" ]; then
		config=$(first_file "$here/edged.yaml" "$tree/config/demo.yaml") ||
			die "no config found; give one with --config FILE"
	fi
	[ -f "$config" ] || die "$config: no such file"
	check=$config
fi

if [ ! -e /etc/nv_tegra_release ]; then
	say "no /etc/nv_tegra_release: not a Jetson; edged will use the generic arm64 profile"
fi

# The new binary must accept the config before it replaces anything.
"$bin" validate -c "$check" || die "the new edged refuses $check; nothing was changed"

# The memory limits follow the board's hardware profile (memory_budget_mb in
# hwprofiles/profiles/*.yaml): MemoryHigh at the budget, MemoryMax half as much again.
model=""
if [ -r /proc/device-tree/model ]; then
	model=$(tr -d '\000' </proc/device-tree/model)
fi
case $model in
*"AGX Orin"*) mem_high=8G mem_max=12G ;;
*"Orin NX"*) mem_high=4G mem_max=6G ;;
*"Orin Nano"*) mem_high=2G mem_max=3G ;;
*) mem_high=1G mem_max=1536M ;;
esac

# Stage every file next to its target, so the swap below is a few renames.
install -d -m 0755 "$libdir"
ortname=$(basename "$ort")
install -m 0755 "$bin" "$bindir/edged.new"
install -m 0644 "$ort" "$libdir/$ortname.new"

if ! getent passwd "$user" >/dev/null; then
	say "creating system user $user"
	useradd --system --user-group --home-dir "$home" --no-create-home \
		--shell /usr/sbin/nologin --comment "edged inspection runtime" "$user"
fi
# The GPU device nodes belong to these groups on L4T.
for g in video render; do
	if getent group "$g" >/dev/null; then
		usermod -a -G "$g" "$user"
	fi
done

if [ "$upgrade" -eq 1 ]; then
	say "stopping edged"
	systemctl stop edged
fi

if [ -f "$bindir/edged" ]; then
	cp -p "$bindir/edged" "$bindir/edged.prev"
fi
mv -f "$bindir/edged.new" "$bindir/edged"
mv -f "$libdir/$ortname.new" "$libdir/$ortname"
if [ "$ortname" != libonnxruntime.so ]; then
	ln -sfn "$ortname" "$libdir/libonnxruntime.so"
fi
install -m 0644 "$here/edged.service" "$unitfile"

# Drop-ins hold local changes; an existing one is the administrator's and stays.
if [ ! -f "$dropin" ]; then
	install -d -m 0755 "$(dirname "$dropin")"
	cat >"$dropin" <<EOF
# Written by install.sh for "${model:-an arm64 board}"; edit freely, upgrades keep it.
[Service]
MemoryHigh=$mem_high
MemoryMax=$mem_max
EOF
fi

if [ "$upgrade" -eq 0 ] && [ ! -f "$conffile" ]; then
	# Secrets (MQTT password, admin token) live in the config: readable by edged only.
	install -d -m 0750 -o root -g "$user" "$confdir"
	install -m 0640 -o root -g "$user" "$config" "$conffile"
	say "installed $config as $conffile"
fi

systemctl daemon-reload
systemctl enable edged >/dev/null 2>&1
if [ "$start" -eq 1 ]; then
	systemctl restart edged
	say "edged $(if [ "$upgrade" -eq 1 ]; then echo upgraded; else echo installed; fi) and started; follow it with: journalctl -u edged -f"
else
	say "edged installed and enabled, not started"
fi
