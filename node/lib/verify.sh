# shellcheck shell=bash
# eks-ca-remediator node script, module verify.sh: what proves the CA works, after the change:
# TLS verification of the registries and the canary pull through containerd. Joined into one
# script by tools/ssm_document.py.

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

# verify_node: after the change on a Linux node, every check that can prove it (FAILURES gets
# what failed; R_LEVEL says how strong the proof is).
verify_node() {
  if [ "${#HOSTS[@]}" -gt 0 ]; then
    verify_tls "$TRUST_BUNDLE"
    R_LEVEL="tls-only"
  fi

  if [ -n "$CANARY_IMAGE" ]; then
    run_canary
    log "canary pull of $CANARY_IMAGE ($R_LEVEL): $R_CANARY"
    case "$R_CANARY" in failed*) FAILURES+=("canary pull failed") ;; esac
  fi

  if [ "$STRATEGY_EFFECTIVE" = "hosts-toml" ] && [ "${#R_HOSTS_FOREIGN[@]}" -gt 0 ]; then
    FAILURES+=("hosts.toml not ours for ${R_HOSTS_FOREIGN[*]} (left untouched; containerd will not use the CA there)")
  fi
}
