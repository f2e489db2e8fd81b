#!/bin/bash
# shellcheck shell=bash
#
# eks-ca-remediator node script.
#
# Installs a private CA bundle into the node's trust store and makes containerd's CRI plugin use
# it. containerd loads the system CA pool once per process, so a CA trusted after containerd
# started is ignored by image pulls until containerd restarts (or until a containerd hosts.toml
# names the CA for a registry, which containerd re-reads on every pull).
#
# Runs as root under SSM aws:runShellScript (`sh _script.sh`). Parameters arrive only as
# environment variables (interpolationType ENV_VAR):
#   SSM_CaBundle       base64 of a PEM bundle of CA certificates (required)
#   SSM_Strategy       auto | restart | hosts-toml                       (default auto)
#   SSM_RegistryHosts  comma-separated host[:port] list, may be empty    (default empty)
#   SSM_CanaryImage    image reference pulled through containerd to verify (default empty)
#   SSM_DryRun         true | false                                      (default false)
# Every value is re-validated here; none is ever evaluated or spliced into shell text.
#
# Images, and the oldest tools each ships (only options these accept are used here):
#   Amazon Linux 2      systemd 219, bash 4.2, OpenSSL 1.0.2k, coreutils 8.22, gawk; crictl;
#                       containerd 1.7; `sh` is bash in POSIX mode
#   Amazon Linux 2023   containerd 2.x (version 3 config from nodeadm), no crictl
#   Ubuntu / Debian     dash as `sh`, mawk as `awk`
#   Bottlerocket        the script runs in the control container (amazonlinux, no openssl, no
#                       systemctl, no access to the host's containerd); the host is changed
#                       only through its API (`apiclient set settings.pki...`)
#
# Output: human-readable log on stderr; exactly one JSON line on stdout (also on failure).
# Exit status: 0 on success and dry-run, 1 on failure, 2 when a parameter is rejected.

if [ -z "${BASH_VERSION:-}" ]; then
  if command -v bash >/dev/null 2>&1; then
    exec bash "$0" "$@"
  fi
  echo '{"result":"failure","reason":"bash is required to run this script","os_family":"unknown","strategy_requested":"","strategy_used":"","restarted":false,"containerd_before":{"pid":null,"started_at":null},"containerd_after":{"pid":null,"started_at":null},"bundle_changed":false,"trust_bundle_mtime":null,"hosts_toml":{"written":[],"unchanged":[],"foreign_untouched":[]},"verification":{},"verification_level":"none","canary":"skipped","fingerprint":"","dry_run":false,"actions":[],"warnings":[]}'
  exit 1
fi
# Bash run as `sh` (Amazon Linux) starts in POSIX mode, where bash 4.2 has no process
# substitution: leave it before anything else is parsed.
set +o posix

set -u -o pipefail
export LC_ALL=C
umask 022
PATH="${PATH:-}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
export PATH

# stdout is reserved for the final JSON line: everything else goes to stderr.
exec 3>&1 1>&2

readonly OUR_NAME="eks-ca-remediator"
readonly HOSTS_MARKER="# managed-by: eks-ca-remediator (do not edit; rewritten on every remediation)"
readonly CERTS_D="/etc/containerd/certs.d"
readonly CONTAINERD_CONFIG="/etc/containerd/config.toml"
readonly CONTAINERD_SOCKET_DEFAULT="/run/containerd/containerd.sock"
readonly CRI_WAIT_SECONDS=30
readonly MAX_CERTS=50
readonly MAX_BUNDLE_B64=40000
# Bottlerocket: the settings.pki bundle this product owns (an Identifier: letters, digits, '-').
readonly BR_PKI_NAME="eks-ca-remediator"

# ---------------------------------------------------------------------------------------------
# Result state (every field of the JSON line)
# ---------------------------------------------------------------------------------------------
R_RESULT="failure"
R_REASON=""
R_OS="unknown"
R_STRATEGY_REQ=""
R_STRATEGY_USED=""
R_RESTARTED=false
R_BEFORE_PID=""
R_BEFORE_START=""
R_AFTER_PID=""
R_AFTER_START=""
R_BUNDLE_CHANGED=false
R_TRUST_MTIME=""
R_CANARY="skipped"
R_LEVEL="none"
R_CONTAINERD_VERSION=""
R_CONFIG_PATH=""
R_FINGERPRINT=""
R_DRY_RUN=false
declare -a R_ACTIONS=()
declare -a R_WARNINGS=()
declare -a R_HOSTS_WRITTEN=()
declare -a R_HOSTS_UNCHANGED=()
declare -a R_HOSTS_FOREIGN=()
declare -a R_VERIFY_HOSTS=()
declare -a R_VERIFY_RESULTS=()
EMITTED=false
WORK=""

log() { printf '%s remediate-ca: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
action() {
  R_ACTIONS+=("$1")
  log "action: $1"
}
warn() {
  R_WARNINGS+=("$1")
  log "warning: $1"
}

# JSON string: printable ASCII only (control and non-ASCII bytes are dropped), escaped, bounded.
json_str() {
  local s
  s=$(printf '%s' "${1:0:1500}" | tr -cd '\11\12\15\40-\176')
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/\\r}
  s=${s//$'\t'/\\t}
  printf '"%s"' "$s"
}

json_list() {
  local first=true item
  printf '['
  for item in "$@"; do
    if [ "$first" = true ]; then first=false; else printf ','; fi
    json_str "$item"
  done
  printf ']'
}

# A number we computed ourselves (digits and one dot) or null.
json_num() {
  if [[ "${1:-}" =~ ^[0-9]+(\.[0-9]+)?$ ]]; then printf '%s' "$1"; else printf 'null'; fi
}

json_bool() {
  if [ "${1:-}" = true ]; then printf 'true'; else printf 'false'; fi
}

emit_json() {
  local i
  {
    printf '{"result":%s' "$(json_str "$R_RESULT")"
    printf ',"reason":%s' "$(json_str "$R_REASON")"
    printf ',"os_family":%s' "$(json_str "$R_OS")"
    printf ',"strategy_requested":%s' "$(json_str "$R_STRATEGY_REQ")"
    printf ',"strategy_used":%s' "$(json_str "$R_STRATEGY_USED")"
    printf ',"restarted":%s' "$(json_bool "$R_RESTARTED")"
    printf ',"containerd_version":%s' "$(json_str "$R_CONTAINERD_VERSION")"
    printf ',"registry_config_path":%s' "$(json_str "$R_CONFIG_PATH")"
    printf ',"containerd_before":{"pid":%s,"started_at":%s}' \
      "$(json_num "$R_BEFORE_PID")" "$(json_num "$R_BEFORE_START")"
    printf ',"containerd_after":{"pid":%s,"started_at":%s}' \
      "$(json_num "$R_AFTER_PID")" "$(json_num "$R_AFTER_START")"
    printf ',"bundle_changed":%s' "$(json_bool "$R_BUNDLE_CHANGED")"
    printf ',"trust_bundle_mtime":%s' "$(json_num "$R_TRUST_MTIME")"
    printf ',"hosts_toml":{"written":%s,"unchanged":%s,"foreign_untouched":%s}' \
      "$(json_list ${R_HOSTS_WRITTEN[@]+"${R_HOSTS_WRITTEN[@]}"})" "$(json_list ${R_HOSTS_UNCHANGED[@]+"${R_HOSTS_UNCHANGED[@]}"})" \
      "$(json_list ${R_HOSTS_FOREIGN[@]+"${R_HOSTS_FOREIGN[@]}"})"
    printf ',"verification":{'
    for i in ${R_VERIFY_HOSTS[@]+"${!R_VERIFY_HOSTS[@]}"}; do
      [ "$i" -gt 0 ] && printf ','
      printf '%s:%s' "$(json_str "${R_VERIFY_HOSTS[$i]}")" "$(json_str "${R_VERIFY_RESULTS[$i]}")"
    done
    printf '}'
    printf ',"verification_level":%s' "$(json_str "$R_LEVEL")"
    printf ',"canary":%s' "$(json_str "$R_CANARY")"
    printf ',"fingerprint":%s' "$(json_str "$R_FINGERPRINT")"
    printf ',"dry_run":%s' "$(json_bool "$R_DRY_RUN")"
    printf ',"actions":%s' "$(json_list ${R_ACTIONS[@]+"${R_ACTIONS[@]:0:40}"})"
    printf ',"warnings":%s' "$(json_list ${R_WARNINGS[@]+"${R_WARNINGS[@]:0:20}"})"
    printf '}\n'
  } >&3
  EMITTED=true
}

# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then rm -rf -- "$WORK"; fi
}

# shellcheck disable=SC2317  # the EXIT trap
on_exit() {
  local rc=$?
  cleanup
  if [ "$EMITTED" != true ]; then
    R_RESULT="failure"
    [ -n "$R_REASON" ] || R_REASON="internal error: script ended unexpectedly (exit status $rc)"
    emit_json
    [ "$rc" -ne 0 ] || rc=1
  fi
  exit "$rc"
}
trap on_exit EXIT

# fail REASON [STATUS]: report failure and stop.
fail() {
  R_RESULT="failure"
  R_REASON="$1"
  log "FAILED: $1"
  emit_json
  exit "${2:-1}"
}

# ---------------------------------------------------------------------------------------------
# Parameters: re-validated with strict patterns (the SSM document validates them too).
# ---------------------------------------------------------------------------------------------
reject() { fail "rejected parameter: $1" 2; }

if [ -z "${SSM_CaBundle+set}" ]; then
  fail "SSM_CaBundle is not set: SSM agent too old for ENV_VAR interpolation, needs 3.3.2746+" 2
fi
CA_B64="$SSM_CaBundle"
STRATEGY="${SSM_Strategy-auto}"
HOSTS_RAW="${SSM_RegistryHosts-}"
CANARY_IMAGE="${SSM_CanaryImage-}"
DRY_RUN_RAW="${SSM_DryRun-false}"

case "$DRY_RUN_RAW" in
  true) R_DRY_RUN=true ;;
  false) R_DRY_RUN=false ;;
  *) reject "SSM_DryRun must be exactly 'true' or 'false'" ;;
esac
case "$STRATEGY" in
  auto | restart | hosts-toml) R_STRATEGY_REQ="$STRATEGY" ;;
  *)
    R_STRATEGY_REQ="invalid"
    reject "SSM_Strategy must be one of auto, restart, hosts-toml"
    ;;
esac
if [ -z "$CA_B64" ]; then
  reject "SSM_CaBundle is empty"
fi
if [ "${#CA_B64}" -gt "$MAX_BUNDLE_B64" ]; then
  reject "SSM_CaBundle is longer than $MAX_BUNDLE_B64 characters"
fi
if ! [[ "$CA_B64" =~ ^[A-Za-z0-9+/]+={0,2}$ ]] || [ $((${#CA_B64} % 4)) -ne 0 ]; then
  reject "SSM_CaBundle is not base64 (only A-Z a-z 0-9 + / and '=' padding, no whitespace)"
fi

HOST_RE='^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[0-9]{1,5})?$'
declare -a HOSTS=()
if [ -n "$HOSTS_RAW" ]; then
  if [ "${#HOSTS_RAW}" -gt 2000 ] || ! [[ "$HOSTS_RAW" =~ ^[a-z0-9.:,-]+$ ]]; then
    reject "SSM_RegistryHosts must be a comma-separated list of host[:port] (a-z 0-9 . - :)"
  fi
  IFS=',' read -r -a HOSTS <<<"$HOSTS_RAW"
  if [ "${#HOSTS[@]}" -gt 20 ] || [[ "$HOSTS_RAW" == *, ]] || [[ "$HOSTS_RAW" == ,* ]]; then
    reject "SSM_RegistryHosts must hold 1 to 20 comma-separated entries"
  fi
  for h in ${HOSTS[@]+"${HOSTS[@]}"}; do
    if ! [[ "$h" =~ $HOST_RE ]] || [[ "$h" == *..* ]]; then
      reject "SSM_RegistryHosts entry is not a valid host[:port]"
    fi
    if [[ "$h" == *:* ]]; then
      port="${h##*:}"
      if [ "$((10#$port))" -lt 1 ] || [ "$((10#$port))" -gt 65535 ]; then
        reject "SSM_RegistryHosts entry has a port outside 1-65535"
      fi
    fi
  done
fi

IMAGE_RE='^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$'
if [ -n "$CANARY_IMAGE" ]; then
  if [ "${#CANARY_IMAGE}" -gt 512 ] || ! [[ "$CANARY_IMAGE" =~ $IMAGE_RE ]]; then
    reject "SSM_CanaryImage is not a valid image reference (registry/repository[:tag][@sha256:digest])"
  fi
fi

if [ "$STRATEGY" = "hosts-toml" ] && [ "${#HOSTS[@]}" -eq 0 ]; then
  fail "strategy hosts-toml needs at least one registry host in RegistryHosts" 2
fi

# ---------------------------------------------------------------------------------------------
# Platform, tools and OS
# ---------------------------------------------------------------------------------------------
# need TOOL...: fail, naming the tool and the image, when one is not on PATH.
need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || fail "required command not found on PATH: $tool (image: $R_OS)"
  done
}

os_field() {
  # Value of KEY=value in an os-release file without sourcing it.
  local v
  v=$(awk -F= -v k="$1" '$1 == k { print substr($0, length(k) + 2); exit }' "${2:-/etc/os-release}" 2>/dev/null)
  v=${v#\"}
  v=${v%\"}
  v=${v#\'}
  v=${v%\'}
  printf '%s' "$v"
}

# Bottlerocket: Run Command runs in the control container, whose own os-release is amazonlinux's.
# host-ctr mounts the host's os-release at /etc/bottlerocket-release and the container's state
# under /.bottlerocket (bottlerocket-core-kit sources/host-ctr, withDefaultMounts).
if [ -d /.bottlerocket ] || [ -e /etc/bottlerocket-release ]; then
  R_OS="bottlerocket"
  PLATFORM="bottlerocket"
  command -v apiclient >/dev/null 2>&1 ||
    fail "Bottlerocket detected (/.bottlerocket) but apiclient is not on PATH: run this document in the control container"
  need base64 sha256sum awk grep sed timeout mktemp
else
  PLATFORM="linux"
  [ -r /etc/os-release ] || fail "cannot read /etc/os-release: unknown operating system"
  OS_ID=$(os_field ID)
  OS_VERSION=$(os_field VERSION_ID)
  case "$OS_ID" in
    amzn)
      case "$OS_VERSION" in
        2) R_OS="al2" ;;
        2023*) R_OS="al2023" ;;
        *) fail "unsupported Amazon Linux version (VERSION_ID must be 2 or 2023)" ;;
      esac
      ANCHOR_DIR="/etc/pki/ca-trust/source/anchors"
      ANCHOR_FILE="$ANCHOR_DIR/$OUR_NAME.pem"
      TRUST_BUNDLE="/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"
      REFRESH=(update-ca-trust extract)
      REFRESH_FULL=(update-ca-trust extract)
      ;;
    ubuntu | debian)
      R_OS="$OS_ID"
      ANCHOR_DIR="/usr/local/share/ca-certificates"
      ANCHOR_FILE="$ANCHOR_DIR/$OUR_NAME.crt"
      TRUST_BUNDLE="/etc/ssl/certs/ca-certificates.crt"
      REFRESH=(update-ca-certificates)
      # --fresh also drops the links of a removed anchor (a plain run leaves them dangling).
      REFRESH_FULL=(update-ca-certificates --fresh)
      ;;
    *) fail "unsupported operating system (ID in /etc/os-release is not amzn, ubuntu or debian)" ;;
  esac
  need openssl base64 sha256sum timeout systemctl awk grep sed date flock mktemp comm sort cp readlink "${REFRESH[0]}"
  log "os: $R_OS; anchor file $ANCHOR_FILE; trust bundle $TRUST_BUNDLE"
fi

WORK=$(mktemp -d) || fail "cannot create a temporary directory"
chmod 700 "$WORK"

# ---------------------------------------------------------------------------------------------
# Bundle validation (before anything is touched)
# ---------------------------------------------------------------------------------------------
printf '%s' "$CA_B64" | base64 -d >"$WORK/bundle.pem" 2>/dev/null ||
  fail "SSM_CaBundle does not decode as base64" 2
R_FINGERPRINT=$(sha256sum "$WORK/bundle.pem" | awk '{print $1}')

[ -s "$WORK/bundle.pem" ] || fail "CA bundle is empty after base64 decoding" 2
if grep -q 'PRIVATE KEY' "$WORK/bundle.pem"; then
  fail "CA bundle contains a PRIVATE KEY: refusing to install it (send certificates only)" 2
fi
if [ "$(tr -d '\000' <"$WORK/bundle.pem" | wc -c)" -ne "$(wc -c <"$WORK/bundle.pem")" ] ||
  ! grep -q '^-----BEGIN ' "$WORK/bundle.pem"; then
  fail "CA bundle is not PEM text (no '-----BEGIN CERTIFICATE-----' block; DER is not accepted)" 2
fi
# Every PEM block must be a CERTIFICATE; BEGIN/END must pair up.
bad_label=$(awk '
  /^-----BEGIN / { if (open) { print "nested BEGIN"; exit } open = 1; l = $0; sub(/^-----BEGIN /, "", l); sub(/-----[[:space:]]*$/, "", l); if (l != "CERTIFICATE") { print "a PEM block of type " l; exit } next }
  /^-----END /   { if (!open) { print "END without BEGIN"; exit } open = 0; next }
  END            { if (open) print "unterminated PEM block" }
' "$WORK/bundle.pem" | tr -cd 'A-Za-z0-9 ')
if [ -n "$bad_label" ]; then
  fail "CA bundle is not a plain list of certificates: found $bad_label" 2
fi
awk -v dir="$WORK" '
  /^-----BEGIN CERTIFICATE-----/ { n++; f = sprintf("%s/cert.%03d.pem", dir, n) }
  f != "" { print > f }
  /^-----END CERTIFICATE-----/ { close(f); f = "" }
' "$WORK/bundle.pem"
shopt -s nullglob
CERT_FILES=("$WORK"/cert.*.pem)
shopt -u nullglob
[ "${#CERT_FILES[@]}" -gt 0 ] || fail "CA bundle holds no certificate" 2
[ "${#CERT_FILES[@]}" -le "$MAX_CERTS" ] || fail "CA bundle holds more than $MAX_CERTS certificates" 2

if command -v openssl >/dev/null 2>&1; then
  n=0
  for cf in ${CERT_FILES[@]+"${CERT_FILES[@]}"}; do
    n=$((n + 1))
    text=$(timeout 10 openssl x509 -in "$cf" -noout -text 2>/dev/null) ||
      fail "certificate #$n in the CA bundle cannot be parsed by openssl" 2
    subject=$(timeout 10 openssl x509 -in "$cf" -noout -subject 2>/dev/null | head -c 300)
    is_ca=$(printf '%s\n' "$text" | awk '
      /X509v3 Basic Constraints/ { bc = 1; next }
      bc { if ($0 ~ /^[[:space:]]*CA:TRUE/) print "yes"; exit }')
    if [ "$is_ca" != "yes" ]; then
      fail "certificate #$n in the CA bundle is not a CA (basicConstraints CA:TRUE missing): $subject" 2
    fi
    if ! timeout 10 openssl x509 -in "$cf" -noout -checkend 0 >/dev/null 2>&1; then
      fail "certificate #$n in the CA bundle has expired: $subject" 2
    fi
    log "bundle certificate #$n ok: $subject"
  done
else
  # Only in Bottlerocket's control container (Linux nodes need openssl above). Bottlerocket's
  # API parses every certificate itself; the control side checked CA:TRUE and expiry.
  warn "no openssl in the control container: certificates are checked by Bottlerocket's API (x509 parse) and by the control side (CA, expiry)"
fi

# ---------------------------------------------------------------------------------------------
# TLS verification of the registries (openssl s_client against a CA file)
# ---------------------------------------------------------------------------------------------
host_port() { if [[ "$1" == *:* ]]; then printf '%s' "$1"; else printf '%s:443' "$1"; fi; }

# verify_tls CAFILE: one result per registry host; failures go to FAILURES.
verify_tls() {
  local cafile=$1 h hp name out rc why help
  local -a opts=()
  # Verify against CAFILE only where openssl can be told so (-no-CApath: 1.1.0+, -no-CAstore:
  # 3.0+); OpenSSL 1.0.2 has neither and also loads its default store.
  help=$(timeout 10 openssl s_client -help 2>&1)
  if printf '%s\n' "$help" | grep -q -- '-no-CApath'; then opts+=(-no-CApath); fi
  if printf '%s\n' "$help" | grep -q -- '-no-CAstore'; then opts+=(-no-CAstore); fi
  for h in ${HOSTS[@]+"${HOSTS[@]}"}; do
    hp=$(host_port "$h")
    name=${hp%:*}
    out=$(timeout 15 openssl s_client -connect "$hp" -servername "$name" -verify_return_error \
      -CAfile "$cafile" ${opts[@]+"${opts[@]}"} </dev/null 2>&1)
    rc=$?
    R_VERIFY_HOSTS+=("$h")
    if [ "$rc" -eq 0 ] && printf '%s\n' "$out" | grep -q 'Verify return code: 0 (ok)'; then
      R_VERIFY_RESULTS+=("ok")
      log "TLS verification of $hp against $cafile: ok"
    else
      if [ "$rc" -eq 124 ]; then
        why="timed out after 15 s"
      else
        why=$(printf '%s\n' "$out" | grep -m1 -Ei 'verify error|errno|connect:|unable|refused|error' | head -c 300)
        [ -n "$why" ] || why="openssl s_client exit status $rc"
      fi
      R_VERIFY_RESULTS+=("failed: $why")
      FAILURES+=("TLS verification of $h failed")
      log "TLS verification of $hp: failed: $why"
    fi
  done
}

# finish: the result line once verification is done (FAILURES decides).
finish() {
  if [ "${#FAILURES[@]}" -gt 0 ]; then
    local joined
    joined=$(printf '%s; ' ${FAILURES[@]+"${FAILURES[@]}"})
    fail "${joined%; }"
  fi
  R_RESULT="success"
  R_REASON=""
  log "done: success (verification: $R_LEVEL)"
  emit_json
  exit 0
}
declare -a FAILURES=()

# ---------------------------------------------------------------------------------------------
# Bottlerocket: settings.pki through the API; Bottlerocket regenerates its trust bundle and
# restarts containerd itself (affected services of settings.pki: pki, containerd).
# ---------------------------------------------------------------------------------------------
# br_read: BR_DATA and BR_TRUSTED of our bundle as `apiclient get` prints them (pretty JSON of
# {"settings": {"pki": {NAME: {"data": ..., "trusted": ...}}}}; data is base64, so no escapes).
br_read() {
  local out
  out=$(timeout 60 apiclient get "settings.pki.$BR_PKI_NAME" 2>&1) ||
    fail "apiclient get settings.pki.$BR_PKI_NAME failed: $(printf '%s' "$out" | tail -n 1 | head -c 300)"
  BR_DATA=$(printf '%s\n' "$out" | grep -o '"data": *"[A-Za-z0-9+/=]*"' | head -n 1 | sed 's/^"data": *"//; s/"$//')
  BR_TRUSTED=$(printf '%s\n' "$out" | grep -o '"trusted": *[a-z]*' | head -n 1 | sed 's/^"trusted": *//')
}

remediate_bottlerocket() {
  local out
  R_STRATEGY_USED="bottlerocket-api"
  if [ "$STRATEGY" = "hosts-toml" ]; then
    warn "strategy hosts-toml does not apply on Bottlerocket (containerd's config is generated from settings): used settings.pki.$BR_PKI_NAME"
  fi
  br_read
  if [ "$BR_DATA" = "$CA_B64" ] && [ "$BR_TRUSTED" = true ]; then
    R_BUNDLE_CHANGED=false
    log "settings.pki.$BR_PKI_NAME already holds this bundle, trusted: nothing set"
  else
    R_BUNDLE_CHANGED=true
    if [ "$R_DRY_RUN" = true ]; then
      action "would apiclient set settings.pki.$BR_PKI_NAME (data sha256 $R_FINGERPRINT, trusted=true)"
    else
      out=$(timeout 120 apiclient set "pki.$BR_PKI_NAME.data=$CA_B64" "pki.$BR_PKI_NAME.trusted=true" 2>&1) ||
        fail "apiclient set settings.pki.$BR_PKI_NAME was refused: $(printf '%s' "$out" | tail -n 1 | head -c 400)"
      action "apiclient set settings.pki.$BR_PKI_NAME (data sha256 $R_FINGERPRINT, trusted=true): Bottlerocket regenerates its trust bundle and restarts containerd"
    fi
  fi
  if [ "$R_DRY_RUN" = true ]; then
    R_RESULT="dry-run"
    log "dry run: nothing changed"
    emit_json
    exit 0
  fi
  # Read back what the API holds now.
  R_LEVEL="settings-readback"
  br_read
  if [ "$BR_DATA" != "$CA_B64" ] || [ "$BR_TRUSTED" != true ]; then
    fail "apiclient get settings.pki.$BR_PKI_NAME does not show the bundle as trusted after the set"
  fi
  if command -v openssl >/dev/null 2>&1; then verify_tls "$WORK/bundle.pem"; fi
  if [ -n "$CANARY_IMAGE" ]; then
    R_CANARY="unavailable: Bottlerocket's control container cannot reach the host's containerd"
  fi
  finish
}

if [ "$PLATFORM" = "bottlerocket" ]; then
  remediate_bottlerocket
fi

# ---------------------------------------------------------------------------------------------
# containerd: effective config, process, how to talk to it
# ---------------------------------------------------------------------------------------------
# toml_keys FILE: "section.key<TAB>value" for every key of a containerd config file (the subset
# of TOML containerd configs use: [sections] with "double" or 'single' quoted parts, key =
# value, # comments). Section names are normalised to double quotes without blanks.
toml_keys() {
  awk '
    function norm(h) { gsub(/[ \t]/, "", h); gsub(/\047/, "\"", h); return h }
    /^[ \t]*(#|$)/ { next }
    /^[ \t]*\[/ {
      sec = $0; sub(/^[ \t]*\[+/, "", sec); sub(/\]+[ \t]*(#.*)?$/, "", sec); sec = norm(sec); next
    }
    index($0, "=") > 0 {
      k = substr($0, 1, index($0, "=") - 1); k = norm(k)
      v = substr($0, index($0, "=") + 1); sub(/^[ \t]+/, "", v); sub(/[ \t]+$/, "", v)
      if (v ~ /^"/) { v = substr(v, 2); sub(/".*$/, "", v) }
      else if (v ~ /^\047/) { v = substr(v, 2); sub(/\047.*$/, "", v) }
      else sub(/[ \t]*#.*$/, "", v)
      print (sec == "" ? k : sec "." k) "\t" v
    }' "$1" 2>/dev/null
}

# toml_get KEYS KEY: the value of KEY in toml_keys output KEYS; status 1 when KEY is absent.
toml_get() {
  printf '%s\n' "$1" | awk -F'\t' -v k="$2" '$1 == k { v = $2; found = 1 } END { printf "%s", v; exit !found }'
}

# Effective registry config_path, gRPC address and CRI pull mode of the running configuration:
# config.toml, then each of its `imports` (later files override earlier ones, as containerd
# merges them). The key depends on each file's config version: 1 `plugins.cri`, 2
# `plugins."io.containerd.grpc.v1.cri"`, 3 `plugins."io.containerd.cri.v1.images"` (containerd
# docs/cri/config.md; AL2023's nodeadm writes version 3). An empty config_path means containerd
# reads no hosts.toml at all.
read_containerd_config() {
  local f v key imports pattern keys value
  local -a files=()
  CFG_CONFIG_PATH=""
  CFG_ADDRESS=""
  CFG_LOCAL_PULL=""
  CFG_DISCARD=""
  CFG_VERSION=""
  [ -r "$CONTAINERD_CONFIG" ] || return 0
  files=("$CONTAINERD_CONFIG")
  # imports = ["/etc/containerd/config.d/*.toml", ...]: glob patterns, on one line.
  imports=$(toml_get "$(toml_keys "$CONTAINERD_CONFIG")" imports | tr -d '[]"\047' | tr ',' ' ')
  # shellcheck disable=SC2086  # the patterns are globs, expanded here on purpose
  for pattern in $imports; do
    for f in $pattern; do [ -r "$f" ] && files+=("$f"); done
  done
  for f in ${files[@]+"${files[@]}"}; do
    keys=$(toml_keys "$f")
    v=$(toml_get "$keys" version)
    [ -n "$v" ] || v=1
    [ "$f" = "$CONTAINERD_CONFIG" ] && CFG_VERSION="$v"
    case "$v" in
      1) key='plugins.cri' ;;
      2) key='plugins."io.containerd.grpc.v1.cri"' ;;
      *) key='plugins."io.containerd.cri.v1.images"' ;;
    esac
    # A config_path that is present overrides, also when empty; the others only when set.
    if value=$(toml_get "$keys" "$key.registry.config_path"); then CFG_CONFIG_PATH="$value"; fi
    value=$(toml_get "$keys" grpc.address) && [ -n "$value" ] && CFG_ADDRESS="$value"
    if [ "$v" -ge 3 ] 2>/dev/null; then
      value=$(toml_get "$keys" "$key.use_local_image_pull") && [ -n "$value" ] && CFG_LOCAL_PULL="$value"
      value=$(toml_get "$keys" "$key.discard_unpacked_layers") && [ -n "$value" ] && CFG_DISCARD="$value"
    fi
  done
}

# Is /etc/containerd/certs.d one of the directories of config_path?
certs_d_on_path() {
  local dir
  local IFS=':'
  for dir in $CFG_CONFIG_PATH; do
    [ "${dir%/}" = "$CERTS_D" ] && return 0
  done
  return 1
}

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

# hosts-toml applies only where containerd reads /etc/containerd/certs.d. containerd 2.x's
# Transfer-service pull (CRI's default unless use_local_image_pull, or discard_unpacked_layers
# which makes it fall back to local pulls) ignores hosts.toml when config_path lists several
# directories (containerd issues #12415, #12808). Otherwise: the trust store path (auto).
STRATEGY_EFFECTIVE="$STRATEGY"
if [ "$STRATEGY" = "hosts-toml" ]; then
  why=""
  if ! certs_d_on_path; then
    why="containerd's registry config_path ('$CFG_CONFIG_PATH') does not include $CERTS_D, so a hosts.toml there would be ignored"
  elif [ "${R_CONTAINERD_VERSION%%.*}" -ge 2 ] 2>/dev/null && [ "${CFG_VERSION:-1}" -ge 3 ] 2>/dev/null &&
    [[ "$CFG_CONFIG_PATH" == *:* ]] && [ "$CFG_LOCAL_PULL" != true ] && [ "$CFG_DISCARD" != true ]; then
    why="containerd $R_CONTAINERD_VERSION pulls through its Transfer service, which ignores hosts.toml when config_path lists several directories ('$CFG_CONFIG_PATH')"
  fi
  if [ -n "$why" ]; then
    STRATEGY_EFFECTIVE="auto"
    warn "hosts-toml not applicable: $why; used the trust store (auto) instead"
  fi
fi

# ---------------------------------------------------------------------------------------------
# Trust store
# ---------------------------------------------------------------------------------------------
[ -d "$ANCHOR_DIR" ] || fail "trust anchor directory $ANCHOR_DIR does not exist"
exec 9<"$ANCHOR_DIR"
flock -w 120 9 || fail "another remediation holds the lock on $ANCHOR_DIR (waited 120 s)"

# One line per certificate: its base64 DER (PEM body with line breaks removed).
cert_bodies() {
  awk '/^-----BEGIN CERTIFICATE-----/ { b = ""; inb = 1; next }
       /^-----END CERTIFICATE-----/   { if (inb) print b; inb = 0; next }
       inb { gsub(/[[:space:]]/, ""); b = b $0 }' "$@" 2>/dev/null | sort -u
}

cert_bodies "$WORK/bundle.pem" >"$WORK/ours.lst"
if [ -r "$TRUST_BUNDLE" ]; then cert_bodies "$TRUST_BUNDLE" >"$WORK/trusted.lst"; else : >"$WORK/trusted.lst"; fi
if [ -r "$ANCHOR_FILE" ]; then cert_bodies "$ANCHOR_FILE" >"$WORK/previous.lst"; else : >"$WORK/previous.lst"; fi
# Already trusted before this run: every certificate of ours is in the OS trust bundle.
TRUSTED_BEFORE=false
if [ -z "$(comm -23 "$WORK/ours.lst" "$WORK/trusted.lst")" ]; then TRUSTED_BEFORE=true; fi
# Certificates this run takes away from our anchor file (a CA rotation).
REMOVED_COUNT=$(comm -13 "$WORK/ours.lst" "$WORK/previous.lst" | grep -c . || true)
MTIME_BEFORE=$(file_mtime "$TRUST_BUNDLE")
log "trust bundle mtime before: ${MTIME_BEFORE:-missing}; bundle already trusted: $TRUSTED_BEFORE"

# The trust state before this run, to put back if the refresh fails half-way: our anchor file
# (or its absence) and the bytes of the trust bundle containerd reads.
ANCHOR_SAVED=false
if [ -f "$ANCHOR_FILE" ]; then cp -p "$ANCHOR_FILE" "$WORK/anchor.prev" && ANCHOR_SAVED=true; fi
BUNDLE_SAVED=false
if [ -r "$TRUST_BUNDLE" ]; then cat "$TRUST_BUNDLE" >"$WORK/trust.prev" && BUNDLE_SAVED=true; fi

# restore_trust WHY: undo this run's trust-store change and fail, saying whether that worked.
same_file() { [ "$(sha256sum <"$1" 2>/dev/null)" = "$(sha256sum <"$2" 2>/dev/null)" ]; }

restore_trust() {
  local target tmp refreshed state="restored"
  if [ "$ANCHOR_SAVED" = true ]; then
    cp -p "$WORK/anchor.prev" "$ANCHOR_FILE" || state="NOT restored"
  else
    rm -f "$ANCHOR_FILE" || state="NOT restored"
  fi
  # The refresh tool rebuilds from the anchors; if it fails again, put the saved bytes back.
  refreshed=true
  timeout 120 ${REFRESH_FULL[@]+"${REFRESH_FULL[@]}"} >&2 2>&1 || refreshed=false
  if [ "$BUNDLE_SAVED" = true ] && { [ "$refreshed" != true ] || ! same_file "$WORK/trust.prev" "$TRUST_BUNDLE"; }; then
    target=$(readlink -f "$TRUST_BUNDLE")
    if ! { tmp=$(mktemp "$target.XXXXXX") && cat "$WORK/trust.prev" >"$tmp" && chmod 0444 "$tmp" && mv -f "$tmp" "$target"; }; then
      state="NOT restored"
    fi
  fi
  if [ "$BUNDLE_SAVED" = true ] && ! same_file "$WORK/trust.prev" "$TRUST_BUNDLE"; then state="NOT restored"; fi
  action "trust store $state to its state before this run"
  fail "$1; the previous trust state was $state; containerd untouched"
}

if [ -f "$ANCHOR_FILE" ] &&
  [ "$(sha256sum <"$ANCHOR_FILE" | awk '{print $1}')" = "$R_FINGERPRINT" ]; then
  R_BUNDLE_CHANGED=false
  log "$ANCHOR_FILE already holds this bundle: not rewritten"
else
  R_BUNDLE_CHANGED=true
  if [ "$R_DRY_RUN" = true ]; then
    action "would write $ANCHOR_FILE (sha256 $R_FINGERPRINT)"
  else
    tmp=$(mktemp "$ANCHOR_DIR/.$OUR_NAME.XXXXXX") || fail "cannot create a temporary file in $ANCHOR_DIR"
    if ! { cat "$WORK/bundle.pem" >"$tmp" && chmod 0644 "$tmp" && mv -f "$tmp" "$ANCHOR_FILE"; }; then
      rm -f "$tmp"
      fail "cannot write $ANCHOR_FILE"
    fi
    action "wrote $ANCHOR_FILE (sha256 $R_FINGERPRINT)"
  fi
fi
# Refresh only when it changes what is trusted: a certificate of ours is missing from the trust
# bundle, or this run takes certificates away from our file. A refresh rewrites the bundle and so
# moves its mtime; skipping a refresh that would add nothing keeps the mtime meaningful (a second
# run, or a node whose CA userdata already trusted, restarts nothing needlessly).
if [ "$TRUSTED_BEFORE" != true ] || [ "$REMOVED_COUNT" -gt 0 ]; then
  if [ "$R_DRY_RUN" = true ]; then
    action "would run ${REFRESH[*]}"
  else
    out=$(timeout 120 ${REFRESH[@]+"${REFRESH[@]}"} 2>&1)
    rc=$?
    printf '%s\n' "$out" >&2
    if [ "$rc" -ne 0 ]; then
      restore_trust "${REFRESH[*]} failed (exit status $rc: $(printf '%s' "$out" | tail -n 1 | head -c 200))"
    fi
    action "ran ${REFRESH[*]}"
  fi
else
  log "trust bundle already holds every certificate of the CA bundle: not refreshed"
fi
R_TRUST_MTIME=$(file_mtime "$TRUST_BUNDLE")
if [ "$R_DRY_RUN" != true ]; then
  [ -n "$R_TRUST_MTIME" ] || restore_trust "trust bundle $TRUST_BUNDLE is missing after the refresh"
  if [ -n "$(comm -23 "$WORK/ours.lst" <(cert_bodies "$TRUST_BUNDLE"))" ]; then
    restore_trust "trust bundle $TRUST_BUNDLE does not contain the CA after ${REFRESH[*]}"
  fi
fi

# When did the trust bundle that containerd needs appear? If our certificates were already in
# the bundle before this run and none were taken away, the bundle as of its previous mtime was
# good enough; otherwise it is the bundle just written (in a dry run: now).
if [ "$TRUSTED_BEFORE" = true ] && [ "$REMOVED_COUNT" -eq 0 ]; then
  NEEDED_SINCE="$MTIME_BEFORE"
elif [ "$R_DRY_RUN" = true ]; then
  NEEDED_SINCE=$(date +%s.%N)
else
  NEEDED_SINCE="$R_TRUST_MTIME"
fi
CONTAINERD_STALE=$(awk -v s="${R_BEFORE_START:-0}" -v n="${NEEDED_SINCE:-0}" 'BEGIN { print (s < n) ? "true" : "false" }')
log "containerd started ${R_BEFORE_START}; trust needed since ${NEEDED_SINCE}; containerd predates it: $CONTAINERD_STALE"

# ---------------------------------------------------------------------------------------------
# containerd refresh
# ---------------------------------------------------------------------------------------------
write_hosts_toml() {
  local host=$1 dir file content tmp
  dir="$CERTS_D/$host"
  file="$dir/hosts.toml"
  content=$(printf '%s\nserver = "https://%s"\n\n[host."https://%s"]\n  capabilities = ["pull", "resolve"]\n  ca = "%s"\n' \
    "$HOSTS_MARKER" "$host" "$host" "$ANCHOR_FILE")
  if [ -e "$file" ] && ! grep -qxF "$HOSTS_MARKER" "$file" 2>/dev/null; then
    R_HOSTS_FOREIGN+=("$host")
    warn "$file exists and is not ours: left untouched"
    return 0
  fi
  if [ -f "$file" ] && [ "$(cat "$file")" = "$content" ]; then
    R_HOSTS_UNCHANGED+=("$host")
    log "$file already up to date"
    return 0
  fi
  if [ "$R_DRY_RUN" = true ]; then
    action "would write $file"
    R_HOSTS_WRITTEN+=("$host")
    return 0
  fi
  mkdir -p "$dir" || fail "cannot create $dir"
  tmp=$(mktemp "$dir/.hosts.toml.XXXXXX") || fail "cannot create a temporary file in $dir"
  if ! { printf '%s\n' "$content" >"$tmp" && chmod 0644 "$tmp" && mv -f "$tmp" "$file"; }; then
    rm -f "$tmp"
    fail "cannot write $file"
  fi
  R_HOSTS_WRITTEN+=("$host")
  action "wrote $file"
}

restart_containerd() {
  local start_ts
  if [ "$R_DRY_RUN" = true ]; then
    action "would restart containerd (pid $R_BEFORE_PID): $1"
    return 0
  fi
  log "restarting containerd: $1"
  # fd 3 (our stdout) and fd 9 (the lock) must not leak into a containerd started from here.
  timeout 90 systemctl restart containerd 3>&- 9<&- || fail "systemctl restart containerd failed or timed out (90 s)"
  R_RESTARTED=true
  action "restarted containerd (pid $R_BEFORE_PID): $1"
  start_ts=$(date +%s)
  until containerd_answers; do
    if [ $(($(date +%s) - start_ts)) -ge "$CRI_WAIT_SECONDS" ]; then
      fail "containerd did not answer on $SOCKET within ${CRI_WAIT_SECONDS} s after the restart"
    fi
    sleep 0.2
  done
  log "containerd answers again after ~$(($(date +%s) - start_ts)) s"
}

case "$STRATEGY_EFFECTIVE" in
  restart)
    R_STRATEGY_USED="restart"
    restart_containerd "strategy restart always restarts"
    ;;
  auto)
    if [ "$CONTAINERD_STALE" = true ]; then
      R_STRATEGY_USED="restart"
      restart_containerd "containerd started before the trust bundle holding the CA was written"
    else
      R_STRATEGY_USED="none"
      log "containerd started after the trust bundle holding the CA: no restart needed"
    fi
    ;;
  hosts-toml)
    R_STRATEGY_USED="hosts-toml"
    for h in ${HOSTS[@]+"${HOSTS[@]}"}; do write_hosts_toml "$h"; done
    ;;
esac

containerd_pid || fail "containerd is not running after the remediation"
R_AFTER_PID="$CONTAINERD_PID"
if [ "$R_AFTER_PID" = "$R_BEFORE_PID" ]; then
  R_AFTER_START="$R_BEFORE_START"
else
  R_AFTER_START=$(pid_started_at "$R_AFTER_PID") || R_AFTER_START=""
fi

# ---------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------
if [ "$R_DRY_RUN" = true ]; then
  R_RESULT="dry-run"
  R_REASON=""
  log "dry run: nothing changed"
  emit_json
  exit 0
fi

if [ "${#HOSTS[@]}" -gt 0 ]; then
  verify_tls "$TRUST_BUNDLE"
  R_LEVEL="tls-only"
fi

# The canary must pull through the running containerd daemon, the process whose CA pool is
# cached: crictl (CRI, what kubelet uses), else containerd 2.x's `ctr images pull`, which pulls
# through the daemon's Transfer service (with --local it would pull in ctr's own process and
# prove nothing). containerd 1.x's ctr pulls client-side by default (containerd
# cmd/ctr/commands/images/pull.go at v1.7: `--local` defaults to true), so without crictl a
# 1.x node has no honest canary: it is reported unavailable, not failed.
run_canary() {
  local out rc major
  local -a cmd=()
  major=${R_CONTAINERD_VERSION%%.*}
  if [ -n "$CRICTL" ]; then
    cmd=(crictl --runtime-endpoint "unix://$SOCKET" pull "$CANARY_IMAGE")
    R_LEVEL="cri-pull"
  elif [[ "$major" =~ ^[0-9]+$ ]] && [ "$major" -ge 2 ]; then
    cmd=(ctr --address "$SOCKET" --namespace k8s.io images pull)
    if certs_d_on_path; then cmd+=(--hosts-dir "$CERTS_D"); fi
    cmd+=("$CANARY_IMAGE")
    R_LEVEL="daemon-pull"
  else
    R_CANARY="unavailable: no crictl on $R_OS, and ctr of containerd ${R_CONTAINERD_VERSION:-unknown} pulls in its own process, not through the daemon"
    return 0
  fi
  out=$(timeout 120 ${cmd[@]+"${cmd[@]}"} 2>&1)
  rc=$?
  if [ "$rc" -eq 0 ]; then
    R_CANARY="ok"
  elif [ "$rc" -eq 124 ]; then
    R_CANARY="failed: ${cmd[0]} pull timed out after 120 s"
  else
    R_CANARY="failed: $(printf '%s\n' "$out" | grep -v '^[[:space:]]*$' | tail -n 1 | head -c 600)"
  fi
}

if [ -n "$CANARY_IMAGE" ]; then
  run_canary
  log "canary pull of $CANARY_IMAGE ($R_LEVEL): $R_CANARY"
  case "$R_CANARY" in failed*) FAILURES+=("canary pull failed") ;; esac
fi

if [ "$STRATEGY_EFFECTIVE" = "hosts-toml" ] && [ "${#R_HOSTS_FOREIGN[@]}" -gt 0 ]; then
  FAILURES+=("hosts.toml not ours for ${R_HOSTS_FOREIGN[*]} (left untouched; containerd will not use the CA there)")
fi

finish
