# shellcheck shell=bash
# shellcheck disable=SC2034 # the e2e_ variables are read by the scripts that source this
# Sourced by test-arm64.sh and test-riscv64.sh (which define fail): edged built for
# another architecture runs the simulated line under qemu with the embedded broker; the
# results are read with mosquitto_sub, edged is stopped with SIGTERM and must exit 0,
# and its last line must account for every frame.
#
#   cross_e2e ARCH DIR SECONDS RUNTIME -- COMMAND...
#
# RUNTIME is the config's runtime mapping ("{}" for the defaults); COMMAND starts the
# binary (qemu-aarch64 -L SYSROOT bin/edged-linux-arm64). While it runs, e2e_pid is
# its pid, for the caller's EXIT trap to kill. Afterwards e2e_received, e2e_ng,
# e2e_counts and e2e_infer (the least and largest inference ms) say what happened.
e2e_pid=

# free_port prints a TCP port nothing listens on: the embedded broker's clients must
# know its port, so it cannot be 0.
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

cross_e2e() {
	local arch=$1 dir=$2 seconds=$3 runtime=$4
	shift 5
	local port
	port=$(free_port)
	mkdir -p "$dir"
	cat >"$dir/edged.yaml" <<YAML
node: {site: cross, line: $arch, name: qemu}
hwprofile: auto
log: {level: info, format: json}
runtime: $runtime
http: {listen: "127.0.0.1:0"}
mqtt: {broker: embedded, embedded_listen: "127.0.0.1:$port", connect_timeout: 5s, spool: {dir: "$dir/spool"}}
models: {dir: "$dir/models"}
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
	"$@" run -c "$dir/edged.yaml" >"$dir/edged.log" 2>&1 &
	local pid=$!
	e2e_pid=$pid

	# ONNX Runtime takes seconds to load under emulation: wait for the started line.
	for _ in $(seq 1200); do
		grep -q '"msg":"edged started"' "$dir/edged.log" && break
		kill -0 "$pid" 2>/dev/null || {
			cat "$dir/edged.log"
			fail "edged ($arch) exited before it started"
		}
		sleep 0.1
	done
	grep '"msg":"edged started"' "$dir/edged.log" || {
		cat "$dir/edged.log"
		fail "edged ($arch) did not log \"edged started\" within 120 s"
	}

	# -W ends mosquitto_sub with status 27 when its time is up.
	timeout $((seconds + 10)) mosquitto_sub -h 127.0.0.1 -p "$port" -q 1 -v \
		-t "edged/v1/cross/$arch/qemu/result/#" -W "$seconds" >"$dir/results.txt" 2>"$dir/sub.log" || true

	kill -TERM "$pid"
	timeout 60 tail --pid="$pid" -f /dev/null || fail "edged ($arch) still runs 60 s after SIGTERM"
	local rc=0
	wait "$pid" || rc=$?
	e2e_pid=
	[[ "$rc" == 0 ]] || {
		cat "$dir/edged.log"
		fail "edged ($arch) exited with status $rc after SIGTERM, want 0"
	}
	local stopped
	stopped=$(grep '"msg":"edged stopped"' "$dir/edged.log") || {
		cat "$dir/edged.log"
		fail "edged ($arch) exited without its \"edged stopped\" line"
	}
	echo "$stopped"

	e2e_received=$(grep -c '"verdict":' "$dir/results.txt" || true)
	e2e_ng=$(grep -c '"verdict":"NG"' "$dir/results.txt" || true)
	[[ "$e2e_received" -gt 0 ]] || {
		cat "$dir/sub.log" "$dir/edged.log"
		fail "no result reached mosquitto_sub in $seconds s"
	}
	grep -q '"model":{"name":"el-defect"' "$dir/results.txt" ||
		fail "results do not name the el-defect model: $(head -c 400 "$dir/results.txt")"
	e2e_infer=$(sed -n 's/.*"infer":\([0-9.]*\).*/\1/p' "$dir/results.txt" | sort -n | sed -n '1p;$p' | tr '\n' ' ')
	e2e_infer=${e2e_infer% }

	# The stopped line's counts: every accepted frame published or dropped for a reason.
	e2e_counts=$(sed -n 's/.*"cam":"\([^"]*\)".*/\1/p' <<<"$stopped")
	local -A n=()
	local kv k
	for kv in $e2e_counts; do n[${kv%%=*}]=${kv#*=}; done
	for k in accepted published dropped_full dropped_stale error dropped_shutdown; do
		[[ -n "${n[$k]:-}" ]] || fail "the stopped line has no $k count: $stopped"
	done
	[[ "${n[published]}" -ge "$e2e_received" ]] ||
		fail "the stopped line counts published=${n[published]}, fewer than the $e2e_received results received"
	local sum=$((n[published] + n[dropped_full] + n[dropped_stale] + n[error] + n[dropped_shutdown]))
	[[ "$sum" == "${n[accepted]}" ]] || fail "accepted=${n[accepted]} but published and dropped add up to $sum: $e2e_counts"
}
