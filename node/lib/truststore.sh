# shellcheck shell=bash
# eks-ca-remediator node script, module truststore.sh: the OS trust store: our anchor file, the
# refresh, the rollback when a refresh fails, and whether containerd predates the CA. Joined into
# one script by tools/ssm_document.py.

TRUSTED_BEFORE=false
REMOVED_COUNT=0
MTIME_BEFORE=""
ANCHOR_SAVED=false
BUNDLE_SAVED=false
NEEDED_SINCE=""
CONTAINERD_STALE=false

# One line per certificate: its base64 DER (PEM body with line breaks removed).
cert_bodies() {
  awk '/^-----BEGIN CERTIFICATE-----/ { b = ""; inb = 1; next }
       /^-----END CERTIFICATE-----/   { if (inb) print b; inb = 0; next }
       inb { gsub(/[[:space:]]/, ""); b = b $0 }' "$@" 2>/dev/null | sort -u
}

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

# install_trust (under lock_trust_store's lock): write our anchor file and
# refresh the trust store when that changes what is trusted (restoring the previous state when
# the refresh fails), then set CONTAINERD_STALE: containerd started before the trust bundle it
# needs was written.
install_trust() {
  local tmp out rc

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
}
