# shellcheck shell=bash
# eks-ca-remediator node script, module refresh.sh: making the running containerd use the CA:
# a restart, or a hosts.toml per registry (re-read on every pull). Joined into one script by
# tools/ssm_document.py.

readonly HOSTS_MARKER="# managed-by: eks-ca-remediator (do not edit; rewritten on every remediation)"
readonly CRI_WAIT_SECONDS=30

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

# apply_strategy: R_STRATEGY_USED and what it did; R_AFTER_* the containerd running afterwards.
apply_strategy() {
  local h
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
      # A hosts.toml `ca` is appended to rootSystemPool() (containerd remotes/docker/config/
      # hosts.go), the pool the process cached at its first TLS verification: a CA this run
      # took away stays trusted by that process until it restarts.
      if [ "$REMOVED_COUNT" -gt 0 ] && [ "$CONTAINERD_STALE" = true ]; then
        restart_containerd "this bundle removes $REMOVED_COUNT CA(s) that containerd's cached trust pool may still hold"
      fi
      ;;
  esac

  containerd_pid || fail "containerd is not running after the remediation"
  R_AFTER_PID="$CONTAINERD_PID"
  if [ "$R_AFTER_PID" = "$R_BEFORE_PID" ]; then
    R_AFTER_START="$R_BEFORE_START"
  else
    R_AFTER_START=$(pid_started_at "$R_AFTER_PID") || R_AFTER_START=""
  fi
}
