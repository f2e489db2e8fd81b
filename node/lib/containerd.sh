# shellcheck shell=bash
# eks-ca-remediator node script, module containerd.sh: the running containerd process: its PID,
# start time, version, socket and whether it answers. Joined into one script by
# tools/ssm_document.py.

readonly CONTAINERD_SOCKET_DEFAULT="/run/containerd/containerd.sock"
SOCKET=""
CRICTL=""
CONTAINERD_PID=""
SYSTEMCTL_OUT=""

# Boot time in epoch seconds. /proc/stat btime is whole seconds (truncated); "now - uptime"
# has 10 ms resolution, so prefer it when both agree to within 2 s.
boot_epoch() {
  local btime precise
  btime=$(awk '$1 == "btime" { print $2 }' /proc/stat)
  precise=$(awk -v now="$(date +%s.%N)" '{ printf "%.3f", now - $1; exit }' /proc/uptime 2>/dev/null)
  awk -v b="$btime" -v p="${precise:-}" 'BEGIN {
    if (p != "" && (p - b) < 2 && (b - p) < 2) printf "%.3f", p; else printf "%.3f", b }'
}

# containerd_pid: the main PID systemd reports. Uses only `systemctl show -p MainPID`, which
# prints "MainPID=<pid>" on every systemd (AL2 has 219; `--value` needs 230, `-P` 246).
# Sets CONTAINERD_PID and returns 0; returns 1 when the unit has no running main process; 2 when
# systemctl's answer is unusable (SYSTEMCTL_OUT holds it). Not for $(...): it sets globals.
containerd_pid() {
  local pid
  CONTAINERD_PID=""
  SYSTEMCTL_OUT=$(timeout 10 systemctl show -p MainPID containerd 2>&1)
  pid=$(printf '%s\n' "$SYSTEMCTL_OUT" | awk -F= '$1 == "MainPID" { print $2; exit }')
  if ! [[ "$pid" =~ ^[0-9]+$ ]]; then return 2; fi
  if [ "$pid" = 0 ] || [ ! -r "/proc/$pid/stat" ]; then return 1; fi
  CONTAINERD_PID="$pid"
}

# Start time (epoch seconds, fractional) of a pid: /proc/<pid>/stat field 22 (clock ticks since
# boot) plus the boot time. The comm field may hold spaces, so cut after the last ')'.
pid_started_at() {
  local stat rest ticks hz
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  rest=${stat##*) }
  ticks=$(printf '%s\n' "$rest" | awk '{ print $20 }')
  hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
  awk -v t="$ticks" -v hz="$hz" -v b="$(boot_epoch)" 'BEGIN { printf "%.3f", b + t / hz }'
}

file_mtime() {
  date -r "$1" +%s.%N 2>/dev/null | awk '{ printf "%.3f", $1 }'
}

# containerd answers: crictl's CRI status call when crictl is here (always with an explicit
# endpoint: no EKS image writes /etc/crictl.yaml), else the containerd API's version call.
containerd_answers() {
  if [ -n "$CRICTL" ]; then
    timeout 10 crictl --runtime-endpoint "unix://$SOCKET" info >/dev/null 2>&1
  else
    timeout 10 ctr --address "$SOCKET" version >/dev/null 2>&1
  fi
}

# inspect_containerd: the configuration, socket and client of the running containerd, its PID,
# start time and version (R_BEFORE_*, R_CONTAINERD_VERSION); fails, changing nothing, when
# containerd is not running or does not answer.
inspect_containerd() {
  read_containerd_config
  SOCKET="${CFG_ADDRESS:-$CONTAINERD_SOCKET_DEFAULT}"
  R_CONFIG_PATH="$CFG_CONFIG_PATH"
  CRICTL=""
  if command -v crictl >/dev/null 2>&1; then CRICTL="crictl"; fi
  if [ -z "$CRICTL" ] && ! command -v ctr >/dev/null 2>&1; then
    fail "neither crictl nor ctr is on PATH ($R_OS): cannot check that containerd answers; nothing changed"
  fi
  log "containerd socket $SOCKET; registry config_path '${CFG_CONFIG_PATH}' (config version ${CFG_VERSION:-none}); crictl: ${CRICTL:-absent}"

  containerd_pid
  case $? in
    0) R_BEFORE_PID="$CONTAINERD_PID" ;;
    1) fail "containerd is not running (systemctl reports MainPID=0): nothing changed" ;;
    *) fail "systemctl show -p MainPID containerd gave no MainPID on $R_OS: $(printf '%s' "$SYSTEMCTL_OUT" | head -c 300): nothing changed" ;;
  esac
  R_BEFORE_START=$(pid_started_at "$R_BEFORE_PID") || R_BEFORE_START=""
  log "containerd pid $R_BEFORE_PID started at $R_BEFORE_START"
  if ! containerd_answers; then
    fail "containerd (pid $R_BEFORE_PID) does not answer on $SOCKET (${CRICTL:-ctr} within 10 s): nothing changed"
  fi
  if command -v ctr >/dev/null 2>&1; then
    R_CONTAINERD_VERSION=$(timeout 10 ctr --address "$SOCKET" version 2>/dev/null |
      awk '/^Server:/ { s = 1 } s && $1 == "Version:" { print $2; exit }' | tr -cd '0-9A-Za-z.+~-')
  fi
  log "containerd version ${R_CONTAINERD_VERSION:-unknown}"
}
