# shellcheck shell=bash
# eks-ca-remediator node script, module containerd.sh: the running containerd process: its PID,
# start time, version, socket and whether it answers. Joined into one script by
# tools/ssm_document.py.

readonly CONTAINERD_SOCKET_DEFAULT="/run/containerd/containerd.sock"
SOCKET=""
CRICTL=""
CONTAINERD_PID=""
SYSTEMCTL_OUT=""
CTRD_MAJOR=""
CTRD_MINOR=""

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

# version_major_minor TEXT: "MAJOR MINOR" of the first word of TEXT that starts like a version
# (an optional "v", then MAJOR.MINOR); status 1 when none does. The forms the images print:
#   upstream builds      v2.1.4  (containerd Makefile: VERSION is `git describe`, so a "v"), and
#                        `containerd --version` = "containerd <package> <version> <revision>"
#                        (cmd/containerd/command/main.go), e.g.
#                        "containerd github.com/containerd/containerd/v2 v2.1.4 75cb2b7..."
#   Amazon Linux         1.7.20 (`ctr version` on AL2023, amazon-eks-ami issue #1950); the RPM
#                        is 1.7.11-1.amzn2.0.1 / 1.7.11-1.amzn2023.0.1 (amazon-eks-ami #1937)
#   Debian / Ubuntu      1.6.20~ds1, 1.7.24~ds1, 2.1.9+unknown, 2.1.4~ds1-1
# The package path's "/v2" is not a version: words are split on blanks only.
version_major_minor() {
  local word
  local -a words=()
  read -r -a words <<<"$1"
  for word in ${words[@]+"${words[@]}"}; do
    if [[ "$word" =~ ^v?([0-9]+)\.([0-9]+)([.~+-]|$) ]]; then
      printf '%s %s' "$((10#${BASH_REMATCH[1]}))" "$((10#${BASH_REMATCH[2]}))"
      return 0
    fi
  done
  return 1
}

# containerd_config_file PID: the config file the running containerd read: its --config/-c
# argument (/proc/PID/cmdline; cmd/containerd/command/main.go: `--config value, -c value`, also
# `--config=value`), relative to its working directory; else the default.
containerd_config_file() {
  local arg next="" file=""
  while IFS= read -r -d '' arg; do
    if [ -n "$next" ]; then
      file="$arg"
      next=""
      continue
    fi
    case "$arg" in
      --config | -config | -c) next=1 ;;
      --config=* | -config=* | -c=*) file="${arg#*=}" ;;
    esac
  done <"/proc/$1/cmdline"
  if [ -z "$file" ]; then
    printf '%s' "$CONTAINERD_CONFIG_DEFAULT"
  elif [[ "$file" == /* ]]; then
    printf '%s' "$file"
  else
    printf '%s/%s' "$(readlink "/proc/$1/cwd")" "$file"
  fi
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
  local v
  containerd_pid
  case $? in
    0) R_BEFORE_PID="$CONTAINERD_PID" ;;
    1) fail "containerd is not running (systemctl reports MainPID=0): nothing changed" ;;
    *) fail "systemctl show -p MainPID containerd gave no MainPID on $R_OS: $(printf '%s' "$SYSTEMCTL_OUT" | head -c 300): nothing changed" ;;
  esac
  R_BEFORE_START=$(pid_started_at "$R_BEFORE_PID") || R_BEFORE_START=""
  log "containerd pid $R_BEFORE_PID started at $R_BEFORE_START"
  containerd_proxy "$R_BEFORE_PID"
  CONTAINERD_CONFIG=$(containerd_config_file "$R_BEFORE_PID" 2>/dev/null) || CONTAINERD_CONFIG="$CONTAINERD_CONFIG_DEFAULT"
  [ -n "$CONTAINERD_CONFIG" ] || CONTAINERD_CONFIG="$CONTAINERD_CONFIG_DEFAULT"
  R_CONFIG_FILE="$CONTAINERD_CONFIG"
  [ -r "$CONTAINERD_CONFIG" ] || log "containerd's config file $CONTAINERD_CONFIG is not readable: containerd's defaults assumed"
  read_containerd_config
  SOCKET="${CFG_ADDRESS:-$CONTAINERD_SOCKET_DEFAULT}"
  R_CONFIG_PATH="$CFG_CONFIG_PATH"
  CRICTL=""
  if command -v crictl >/dev/null 2>&1; then CRICTL="crictl"; fi
  if [ -z "$CRICTL" ] && ! command -v ctr >/dev/null 2>&1; then
    fail "neither crictl nor ctr is on PATH ($R_OS): cannot check that containerd answers; nothing changed"
  fi
  log "containerd config $CONTAINERD_CONFIG; socket $SOCKET; registry config_path '${CFG_CONFIG_PATH}' (config version ${CFG_VERSION:-none}); crictl: ${CRICTL:-absent}"
  if ! containerd_answers; then
    fail "containerd (pid $R_BEFORE_PID) does not answer on $SOCKET (${CRICTL:-ctr} within 10 s): nothing changed"
  fi
  # The running daemon's version (ctr's Server section); else the binary's on PATH.
  if command -v ctr >/dev/null 2>&1; then
    R_CONTAINERD_VERSION=$(timeout 10 ctr --address "$SOCKET" version 2>/dev/null |
      awk '/^Server:/ { s = 1 } s && $1 == "Version:" { print $2; exit }' | tr -cd '0-9A-Za-z.+~-')
  fi
  if [ -z "$R_CONTAINERD_VERSION" ] && command -v containerd >/dev/null 2>&1; then
    R_CONTAINERD_VERSION=$(timeout 10 containerd --version 2>/dev/null | head -n 1 | tr -cd '0-9A-Za-z.+~/ -' | head -c 200)
  fi
  if v=$(version_major_minor "$R_CONTAINERD_VERSION"); then
    CTRD_MAJOR=${v% *}
    CTRD_MINOR=${v#* }
  fi
  log "containerd version ${R_CONTAINERD_VERSION:-unknown} (major ${CTRD_MAJOR:-?}, minor ${CTRD_MINOR:-?})"
}
