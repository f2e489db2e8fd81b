# shellcheck shell=bash
# eks-ca-remediator node script, module bundle.sh: the CA bundle, validated before anything is
# touched. Joined into one script by tools/ssm_document.py.

readonly MAX_CERTS=50
declare -a CERT_FILES=()

# validate_bundle: decode CA_B64 into $WORK/bundle.pem (R_FINGERPRINT its sha256) and one file
# per certificate (CERT_FILES); fail with exit status 2 unless it is a plain list of unexpired CA
# certificates.
validate_bundle() {
  local bad_label n cf text subject is_ca
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
}
