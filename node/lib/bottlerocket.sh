# shellcheck shell=bash
# eks-ca-remediator node script, module bottlerocket.sh: settings.pki through Bottlerocket's API;
# Bottlerocket regenerates its trust bundle and restarts containerd itself (affected services of
# settings.pki: pki, containerd). Joined into one script by tools/ssm_document.py.

readonly BR_PKI_NAME="eks-ca-remediator"  # the settings.pki bundle we own (letters, digits, '-')
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
