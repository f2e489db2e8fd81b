# shellcheck shell=bash
# eks-ca-remediator node script, module precheck.sh: verify before commit. With RegistryHosts set,
# every host is verified against the trust the node would have AFTER the change, before anything
# is written; a host that fails rejects the bundle and nothing changes. Uses verify_tls, the
# final check's own path (proxy included). Joined into one script by tools/ssm_document.py.

# pem_of_bodies: PEM certificates of cert_bodies lines (base64 DER, one a line) on stdin.
pem_of_bodies() {
  awk 'NF { print "-----BEGIN CERTIFICATE-----"
            for (i = 1; i <= length($0); i += 64) print substr($0, i, 64)
            print "-----END CERTIFICATE-----" }'
}

# precheck CAFILE WHAT: verify every registry host against CAFILE; on a failure, fail with
# "bundle rejected before any change", naming the first host that failed and its verify error.
precheck() {
  local i first=""
  verify_tls "$1"
  R_PRE_HOSTS=(${R_VERIFY_HOSTS[@]+"${R_VERIFY_HOSTS[@]}"})
  R_PRE_RESULTS=(${R_VERIFY_RESULTS[@]+"${R_VERIFY_RESULTS[@]}"})
  R_VERIFY_HOSTS=()
  R_VERIFY_RESULTS=()
  FAILURES=()
  for i in ${R_PRE_HOSTS[@]+"${!R_PRE_HOSTS[@]}"}; do
    case "${R_PRE_RESULTS[$i]}" in
      ok) continue ;;
      # curl exit 77: the CA file cannot be read as certificates (Bottlerocket's control
      # container has no openssl to parse them earlier): the bundle's fault, not the host's.
      *"curl: (77)"*) first="its certificates cannot be loaded (${R_PRE_RESULTS[$i]#failed: })" ;;
      *) first="${R_PRE_HOSTS[$i]}: ${R_PRE_RESULTS[$i]#failed: }" ;;
    esac
    break
  done
  if [ -n "$first" ]; then
    R_PRECHECK="rejected"
    R_BUNDLE_REJECTED=true
    fail "bundle rejected before any change: $first"
  fi
  R_PRECHECK="ok"
  log "pre-check: every registry host verifies against $2"
}

# lock_trust_store: the trust-store lock (fd 9, held to the end), taken before the pre-check
# reads the trust state so that no other run changes it between the check and the change.
lock_trust_store() {
  [ -d "$ANCHOR_DIR" ] || fail "trust anchor directory $ANCHOR_DIR does not exist"
  exec 9<"$ANCHOR_DIR"
  flock -w 120 9 || fail "another remediation holds the lock on $ANCHOR_DIR (waited 120 s)"
}

# precheck_linux: the trust after the change = the OS trust bundle containerd reads, minus the
# certificates of our current anchor file, plus those of every other anchor the refresh reads
# (a CA also trusted through another file stays trusted), plus the new bundle. The refresh tools
# build the bundle from the distribution's roots and the local anchors: update-ca-trust from
# /usr/share/pki/ca-trust-source and /etc/pki/ca-trust/source (any file in anchors/),
# update-ca-certificates from /etc/ca-certificates.conf plus every *.crt below
# /usr/local/share/ca-certificates (update-ca-trust(8), update-ca-certificates(8)). A distribution
# root that is also in our old bundle counts as removed: the check errs towards rejecting.
precheck_linux() {
  local f
  if [ "${#HOSTS[@]}" -eq 0 ]; then
    R_PRECHECK="skipped: no registry hosts"
    log "pre-check skipped: no registry hosts"
    return 0
  fi
  : >"$WORK/others.lst"
  while IFS= read -r -d '' f; do
    [ "$f" = "$ANCHOR_FILE" ] || cert_bodies "$f" >>"$WORK/others.lst"
  done < <(find "$ANCHOR_DIR" -type f -name "$ANCHOR_PATTERN" ! -name ".$OUR_NAME.*" -print0 2>/dev/null)
  comm -23 <(cert_bodies "$TRUST_BUNDLE") <(cert_bodies "$ANCHOR_FILE") |
    sort -u - "$WORK/others.lst" <(cert_bodies "$WORK/bundle.pem") | pem_of_bodies >"$WORK/candidate.pem"
  precheck "$WORK/candidate.pem" "the trust bundle as it would be after the change"
}

# precheck_bottlerocket: the control container sees neither the host's trust bundle nor its
# distribution roots, only the API: the trust after the change = the new bundle plus every other
# settings.pki bundle marked trusted (`apiclient get settings.pki`, pretty JSON, data base64).
# Bottlerocket's own public roots are not counted: a registry with a public certificate is
# rejected here.
precheck_bottlerocket() {
  local out d
  if [ "${#HOSTS[@]}" -eq 0 ]; then
    R_PRECHECK="skipped: no registry hosts"
    log "pre-check skipped: no registry hosts"
    return 0
  fi
  if ! command -v openssl >/dev/null 2>&1 && ! command -v curl >/dev/null 2>&1; then
    R_PRECHECK="unavailable: no openssl or curl in the control container"
    warn "no openssl or curl in the control container: the bundle was not verified against the registry hosts before apiclient set"
    return 0
  fi
  out=$(timeout 60 apiclient get settings.pki 2>&1) ||
    fail "apiclient get settings.pki failed: $(printf '%s' "$out" | tail -n 1 | head -c 300)"
  cp "$WORK/bundle.pem" "$WORK/candidate.pem"
  printf '%s\n' "$out" | awk -v ours="$BR_PKI_NAME" '
    /^ *"[^"]*": *\{ *$/ { name = $0; sub(/^ *"/, "", name); sub(/".*/, "", name); data = ""; trusted = 0; next }
    /"data": *"/         { data = $0; sub(/.*"data": *"/, "", data); sub(/".*/, "", data); next }
    /"trusted": *true/   { trusted = 1; next }
    /^ *\}/              { if (name != "" && name != ours && trusted && data != "") print data; name = "" }' |
    while IFS= read -r d; do
      printf '%s' "$d" | base64 -d 2>/dev/null
      echo
    done >>"$WORK/candidate.pem"
  precheck "$WORK/candidate.pem" "the bundle plus the other trusted settings.pki bundles"
}
