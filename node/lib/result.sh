# shellcheck shell=bash
# eks-ca-remediator node script, module result.sh: every field of the one JSON line on stdout,
# logging, failure and the exit trap. Joined into one script by tools/ssm_document.py.

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
R_CONFIG_FILE=""
R_PULL_PATH=""
R_FINGERPRINT=""
R_DRY_RUN=false
R_PRECHECK="not run"
R_BUNDLE_REJECTED=false
R_COMMITTED=false
declare -a R_PRE_HOSTS=()
declare -a R_PRE_RESULTS=()
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
    printf ',"containerd_config":%s' "$(json_str "$R_CONFIG_FILE")"
    printf ',"cri_pull_path":%s' "$(json_str "$R_PULL_PATH")"
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
    printf ',"precheck":%s,"precheck_hosts":{' "$(json_str "$R_PRECHECK")"
    for i in ${R_PRE_HOSTS[@]+"${!R_PRE_HOSTS[@]}"}; do
      [ "$i" -gt 0 ] && printf ','
      printf '%s:%s' "$(json_str "${R_PRE_HOSTS[$i]}")" "$(json_str "${R_PRE_RESULTS[$i]}")"
    done
    printf '},"bundle_rejected":%s,"committed":%s' "$(json_bool "$R_BUNDLE_REJECTED")" "$(json_bool "$R_COMMITTED")"
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

# fail REASON [STATUS]: report failure and stop.
fail() {
  R_RESULT="failure"
  R_REASON="$1"
  log "FAILED: $1"
  emit_json
  exit "${2:-1}"
}

# Why verification failed; finish turns a non-empty list into a failure.
declare -a FAILURES=()

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
