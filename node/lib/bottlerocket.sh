# shellcheck shell=bash
# eks-ca-remediator node script, module bottlerocket.sh: settings.pki through Bottlerocket's API;
# Bottlerocket regenerates its trust bundle and restarts containerd itself (affected services of
# settings.pki: pki, containerd). Joined into one script by tools/ssm_document.py.

readonly BR_PKI_NAME="eks-ca-remediator"  # the settings.pki bundle we own (letters, digits, '-')
readonly BR_WAIT_SECONDS=30
BR_DATA=""
BR_TRUSTED=""

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
  precheck_bottlerocket # rejects the bundle before apiclient set when a registry host fails
  [ "$R_DRY_RUN" = true ] || R_COMMITTED=true
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
  # What can be proven from here. `apiclient set` commits the settings, then the API server
  # starts thar-be-settings with --daemon and returns once it has forked ("this is just checking
  # that it was able to fork, not checking its work": bottlerocket-core-kit sources/api/
  # apiserver/src/server/controller.rs apply_changes); thar-be-settings then runs the restart
  # commands of the affected services in no fixed order (certdog rewrites
  # /etc/pki/tls/certs/ca-bundle.crt; containerd try-restarts). The control container sees
  # none of it: host-ctr gives it the API socket, apiclient, os-release and its own storage,
  # not the host's /etc/pki or containerd (sources/host-ctr/cmd/host-ctr/main.go
  # withDefaultMounts), and the API has no apply status. So: wait (bounded) until the API
  # serves the committed bundle as trusted, and say that application was not observed.
  R_LEVEL="settings-readback"
  local waited=0
  br_read
  while [ "$BR_DATA" != "$CA_B64" ] || [ "$BR_TRUSTED" != true ]; do
    if [ "$waited" -ge "$BR_WAIT_SECONDS" ]; then
      fail "apiclient get settings.pki.$BR_PKI_NAME does not show the bundle as trusted ${BR_WAIT_SECONDS} s after the set"
    fi
    sleep 1
    waited=$((waited + 1))
    br_read
  done
  if [ "$R_BUNDLE_CHANGED" = true ]; then
    warn "settings.pki.$BR_PKI_NAME is committed and read back; Bottlerocket applies it asynchronously (certdog rewrites the host trust bundle, containerd restarts) and the control container cannot observe that: verified at settings-readback"
  fi
  if command -v openssl >/dev/null 2>&1; then verify_tls "$WORK/bundle.pem"; fi
  if [ -n "$CANARY_IMAGE" ]; then
    R_CANARY="unavailable: Bottlerocket's control container cannot reach the host's containerd"
  fi
  finish
}
