"""Node lab stand-ins: tiny programs on PATH inside a lab node that give the node script exactly
the tool surface of one EKS node image. Each refuses what the real tool of that version refuses,
so a script that leans on a newer option fails here as it would on the node.

Placeholders (@NAME@) are filled in by NodeLab._prepare_files.
"""

from __future__ import annotations

# systemctl for the containerd unit only, with the option surface of one systemd version.
# - `systemctl show --value` appeared in systemd 230 (systemd NEWS, "CHANGES WITH 230":
#   "systemctl show gained a new --value switch"); `-P` (= --value --property=) in 246
#   (NEWS, "CHANGES WITH 246"). Amazon Linux 2 ships systemd 219: there both are errors, as
#   getopt_long reports them ("unrecognized option '--value'", "invalid option -- 'P'").
# - `show -p MainPID` prints `MainPID=<pid>` (0 when the unit is not running) on every version.
SYSTEMCTL = r"""#!/bin/sh
# Node lab stand-in for systemctl (systemd @SYSTEMD@): the containerd unit only.
SYSTEMD=@SYSTEMD@
PIDFILE='@PIDFILE@'
LOG='@LOG@'
err() { echo "systemctl: $1" >&2; exit 1; }
pid() {
  p=$(cat "$PIDFILE" 2>/dev/null)
  if [ -n "$p" ] && [ -r "/proc/$p/stat" ] && ! grep -q ') Z ' "/proc/$p/stat"; then echo "$p"; else echo 0; fi
}
start() {
  [ "$(pid)" != 0 ] && return 0
  env -i PATH='@CONTAINERD_PATH@' @CONTAINERD_ENV@ containerd --config '@CONFIG@' \
    </dev/null >>"$LOG" 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
  echo $! >"$PIDFILE"
}
stop() {
  p=$(pid)
  [ "$p" = 0 ] && return 0
  kill -TERM "$p"
  i=0
  while [ "$(pid)" != 0 ] && [ $i -lt 500 ]; do sleep 0.02; i=$((i + 1)); done
  [ "$(pid)" = 0 ] || kill -KILL "$p"
}
verb="" unit="" props="" value=false
while [ $# -gt 0 ]; do
  case "$1" in
    --value) [ "$SYSTEMD" -ge 230 ] || err "unrecognized option '--value'"; value=true ;;
    -P) [ "$SYSTEMD" -ge 246 ] || err "invalid option -- 'P'"; value=true; shift; props="$props $1" ;;
    -p | --property) shift; props="$props $1" ;;
    --property=*) props="$props ${1#--property=}" ;;
    -p*) props="$props ${1#-p}" ;;
    --no-pager | --quiet | -q) ;;
    -*) err "unrecognized option '$1'" ;;
    *) if [ -z "$verb" ]; then verb=$1; else unit=$1; fi ;;
  esac
  shift
done
case "$unit" in containerd | containerd.service) ;; *) echo "Unit $unit not found (node lab: containerd only)." >&2; exit 5 ;; esac
case "$verb" in
  show)
    for p in $(echo "$props" | tr ',' ' '); do
      case "$p" in
        MainPID) v=$(pid) ;;
        Environment) v='@CONTAINERD_ENV@' ;;
        ActiveState) if [ "$(pid)" != 0 ]; then v=active; else v=inactive; fi ;;
        *) continue ;;
      esac
      if [ "$value" = true ]; then echo "$v"; else echo "$p=$v"; fi
    done
    ;;
  is-active) if [ "$(pid)" != 0 ]; then echo active; else echo inactive; exit 3; fi ;;
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  try-restart) [ "$(pid)" = 0 ] || { stop; start; } ;;
  *) err "unknown operation '$verb' (node lab stand-in)" ;;
esac
"""

# crictl through the lab's small Python CRI client (info, version, pull). No EKS image writes
# /etc/crictl.yaml, and the lab writes none either: without --runtime-endpoint this stand-in
# refuses (real crictl falls back to a deprecated list of default endpoints with a warning).
CRICTL = r"""#!/bin/sh
exec env -i PATH='@SYSTEM_PATH@' NODELAB_CRI_GENERATED='@GENERATED@' PYTHONPATH='@GENERATED@' \
  '@PYTHON@' '@CLIENT@' "$@"
"""

# Amazon Linux's update-ca-trust (p11-kit): rebuilds the extracted PEM bundle from the
# distribution roots plus /etc/pki/ca-trust/source/anchors, replaces it atomically like p11-kit,
# and keeps the /etc/pki/tls/certs/ca-bundle.crt link that Go (and OpenSSL on AL) read.
# A test can make it fail after writing (a refresh that breaks half-way): /etc/nodelab-fail-refresh.
UPDATE_CA_TRUST = r"""#!/bin/sh
set -eu
case "${1:-extract}" in extract) ;; *) echo "update-ca-trust stand-in: only 'extract'" >&2; exit 2 ;; esac
out=/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem
mkdir -p /etc/pki/ca-trust/extracted/pem /etc/pki/tls/certs
tmp=$(mktemp "$out.XXXXXX")
set --
for f in /usr/share/ca-certificates/mozilla/*.crt /etc/pki/ca-trust/source/anchors/*; do
  [ -f "$f" ] && set -- "$@" "$f"
done
[ $# -eq 0 ] || awk 'FNR == 1 { print "# " FILENAME } { print }' "$@" >"$tmp"
chmod 0444 "$tmp"
mv -f "$tmp" "$out"
ln -sfn "$out" /etc/pki/tls/certs/ca-bundle.crt
if [ -e /etc/nodelab-fail-refresh ]; then echo "update-ca-trust: p11-kit: write failed (node lab fault)" >&2; exit 1; fi
"""

# Debian/Ubuntu: the real update-ca-certificates; the fault switch makes it fail after it wrote.
UPDATE_CA_CERTIFICATES = r"""#!/bin/sh
/usr/sbin/update-ca-certificates "$@" || exit $?
if [ -e /etc/nodelab-fail-refresh ]; then echo "update-ca-certificates: write failed (node lab fault)" >&2; exit 1; fi
"""

# `sh` on Amazon Linux (and in Bottlerocket's amazonlinux:2 control container) is bash, which
# runs in POSIX mode when invoked as sh. SSM's aws:runShellScript runs `sh _script.sh`. AL2 has
# bash 4.2: BASH_COMPAT=42 turns on what this bash can of 4.2's behaviour (it cannot take away
# later features; tests/unit/test_node_script_static.py checks the script for those).
SH_BASH = r"""#!/bin/bash
@COMPAT@exec -a sh /bin/bash "$@"
"""

# OpenSSL 1.0.2k (Amazon Linux 2) option surface for the subcommands the node script uses,
# after apps/s_client.c and apps/x509.c at tag OpenSSL_1_0_2k of openssl/openssl. Options added
# later (-no-CApath, -no-CAstore: 1.1.0/3.0; -ext: 1.1.1; -proxy host:port, which the 1.1.1 manual
# lists and the 1.0.x one does not, e.g. NetBSD 7's openssl_s_client(1) next to Ubuntu bionic's
# s_client(1ssl)) are refused like 1.0.2 refuses them:
# "unknown option", usage on stderr, exit 1. `-help` is not an option in 1.0.2 either.
OPENSSL_102 = r"""#!/bin/sh
REAL=/usr/bin/openssl
S_CLIENT_ARG=" -connect -host -port -servername -CAfile -CApath -verify -cert -certform -key -keyform -pass -cipher -starttls -xmpphost -sess_out -sess_in -rand -psk -psk_identity -nextprotoneg -alpn -unix -crl_download -CRLfile -purpose -verify_depth -policy -attime -verify_hostname -verify_email -verify_ip -CAform -dane_tlsa_domain "
S_CLIENT_FLAG=" -verify_return_error -showcerts -debug -msg -nbio_test -state -nbio -crlf -quiet -ign_eof -no_ign_eof -brief -prexit -reconnect -pause -tls1 -tls1_1 -tls1_2 -ssl3 -no_tls1 -no_tls1_1 -no_tls1_2 -no_ssl3 -no_ticket -bugs -serverpref -legacy_renegotiation -legacy_server_connect -no_legacy_server_connect -status -tlsextdebug -no_comp -crl_check -crl_check_all -x509_strict -partial_chain -no_alt_chains -check_ss_sig -trusted_first "
X509_ARG=" -in -out -inform -outform -keyform -CA -CAkey -CAform -CAkeyform -CAserial -days -set_serial -extfile -extensions -signkey -passin -checkend -nameopt -certopt -addtrust -addreject -setalias -md "
X509_FLAG=" -noout -text -subject -issuer -email -hash -subject_hash -issuer_hash -subject_hash_old -issuer_hash_old -serial -dates -startdate -enddate -fingerprint -sha1 -sha256 -md5 -modulus -pubkey -purpose -alias -ocspid -ocsp_uri -C -trustout -clrtrust -clrreject -clrext -req -x509toreq -CAcreateserial -noemail -nocert -text "
usage() {
  echo "unknown option $1" >&2
  echo "usage: $2 args (OpenSSL 1.0.2k-fips, node lab)" >&2
  for o in $3 $4; do echo " $o" >&2; done
  exit 1
}
check() {  # check SUBCOMMAND WITH_ARG FLAGS ARGS...
  sub=$1 with_arg=$2 flags=$3
  shift 3
  while [ $# -gt 0 ]; do
    case "$with_arg" in *" $1 "*) shift 2; continue ;; esac
    case "$flags" in *" $1 "*) shift; continue ;; esac
    usage "$1" "$sub" "$with_arg" "$flags"
  done
}
case "${1:-}" in
  version) echo "OpenSSL 1.0.2k-fips  26 Jan 2017"; exit 0 ;;
  s_client) shift; check s_client "$S_CLIENT_ARG" "$S_CLIENT_FLAG" "$@"; exec "$REAL" s_client "$@" ;;
  x509) shift; check x509 "$X509_ARG" "$X509_FLAG" "$@"; exec "$REAL" x509 "$@" ;;
  *) echo "openssl stand-in (1.0.2k): subcommand '${1:-}' is not modeled in the node lab" >&2; exit 1 ;;
esac
"""

# Bottlerocket's apiclient, as the control container has it: it talks to the host's API. Here it
# crosses from the control container (a chroot in its own mount namespace) into the lab node's
# namespace, where tests/nodelab/apiclient.py plays the API server.
APICLIENT = r"""#!/bin/sh
exec nsenter -t @HOLDER@ -m -- env -i PATH='@HOST_PATH@' ${NODELAB_APPLY_DELAY:+NODELAB_APPLY_DELAY=$NODELAB_APPLY_DELAY} \
  '@PYTHON@' '@APICLIENT_PY@' --state '@STATE@' "$@"
"""
