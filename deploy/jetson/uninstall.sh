#!/bin/sh
# Stop and remove the edged service: unit, drop-ins written by install.sh, binaries and
# the bundled ONNX Runtime. The config (/etc/edged), the state (/var/lib/edged: models,
# their audit log, the spool), the audit log's rotation and the edged user stay, so a
# reinstall picks up where this left off and the audit trail keeps its 180 days.
#
# usage:
#   sudo ./uninstall.sh [--purge]
#
#   --purge   also delete the config, the state with models and audit log, the logrotate
#             file and the edged user
#
# environment: ROOT, SERVICE as for install.sh and upgrade.sh.
set -eu

prog=uninstall.sh
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=deploy.sh
. "$here/deploy.sh"

usage() {
	sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p;}' "$0"
}

purge=0
while [ $# -gt 0 ]; do
	case $1 in
	--purge) purge=1 && shift ;;
	-h | --help)
		usage
		exit 0
		;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done

if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
	die "run as root: sudo $0"
fi

case $(service_mode) in
systemd)
	systemctl disable --now edged >/dev/null 2>&1 || true
	;;
direct)
	say "${ROOT:+ROOT is set: }no systemd: stopping the edged started by upgrade.sh, if any"
	direct_stop
	;;
none)
	say "systemd is not running: no service to stop"
	;;
esac

rm -f "$unitfile"
for f in "$dropindir"/*.conf; do
	if [ -f "$f" ] && grep -qF "$mark" "$f"; then
		rm -f "$f"
	fi
done
rmdir "$dropindir" 2>/dev/null || true
if [ -d "$dropindir" ]; then
	say "kept your drop-ins in ${dropindir#"$ROOT"}"
fi
rm -f "$bindir/edged" "$bindir/edged.prev" "$bindir/edged.failed" "$bindir/edged.new"
rm -rf "$libdir" "$rundir"
if [ "$(service_mode)" = systemd ]; then
	systemctl daemon-reload
	systemctl reset-failed edged >/dev/null 2>&1 || true
fi

if [ "$purge" -eq 0 ]; then
	say "edged removed; kept ${confdir#"$ROOT"}, ${statedir#"$ROOT"} (models, audit log, spool) and user $user (--purge deletes them)"
	exit 0
fi

# The audit log may be needed for its 180 days: say where it went.
say "--purge: deleting ${confdir#"$ROOT"}, ${statedir#"$ROOT"} with the model audit log, ${logrotatefile#"$ROOT"}"
rm -rf "$confdir" "$statedir"
rm -f "$logrotatefile"
if [ -z "$ROOT" ] && getent passwd "$user" >/dev/null; then
	userdel "$user"
fi
say "edged and its data removed"
