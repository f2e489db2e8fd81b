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
# This file is the main flow; what it does lives in node/lib/*.sh, one module per concern.
# tools/ssm_document.py (`make embed`) joins them into ONE script - each `. "$NODE_LIB/x.sh"`
# line below replaced by that module - and writes it into the SSM document in template.yaml;
# the lab and Run Command run that joined script. Run from a checkout, this file sources them.
#
# Runs as root under SSM aws:runShellScript (`sh _script.sh`). Parameters arrive only as
# environment variables (interpolationType ENV_VAR):
#   SSM_CaBundle       base64 of a PEM bundle of CA certificates (required)
#   SSM_Strategy       auto | restart | hosts-toml                       (default auto)
#   SSM_RegistryHosts  comma-separated host[:port] list, may be empty    (default empty)
#   SSM_CanaryImage    image reference pulled through containerd to verify (default empty)
#   SSM_DryRun         true | false                                      (default false)
# With RegistryHosts set, each host is verified against the trust the node would have after the
# change BEFORE anything is written (precheck.sh); a failing host rejects the bundle: nothing
# changes ("bundle_rejected": true, "committed": false in the result).
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
  echo '{"result":"failure","reason":"bash is required to run this script","os_family":"unknown","strategy_requested":"","strategy_used":"","restarted":false,"containerd_before":{"pid":null,"started_at":null},"containerd_after":{"pid":null,"started_at":null},"bundle_changed":false,"trust_bundle_mtime":null,"hosts_toml":{"written":[],"unchanged":[],"foreign_untouched":[]},"verification":{},"verification_level":"none","canary":"skipped","fingerprint":"","dry_run":false,"precheck":"not run","precheck_hosts":{},"bundle_rejected":false,"committed":false,"actions":[],"warnings":[]}'
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
WORK=""

# Modules, joined in this order; each only defines functions and its own globals.
NODE_LIB="${BASH_SOURCE[0]%/*}/lib" # join: drop
. "$NODE_LIB/result.sh"
. "$NODE_LIB/params.sh"
. "$NODE_LIB/platform.sh"
. "$NODE_LIB/bundle.sh"
. "$NODE_LIB/containerd.sh"
. "$NODE_LIB/pullpath.sh"
. "$NODE_LIB/truststore.sh"
. "$NODE_LIB/refresh.sh"
. "$NODE_LIB/verify.sh"
. "$NODE_LIB/precheck.sh"
. "$NODE_LIB/bottlerocket.sh"

trap on_exit EXIT

read_parameters
detect_platform
WORK=$(mktemp -d) || fail "cannot create a temporary directory"
chmod 700 "$WORK"
validate_bundle

if [ "$PLATFORM" = "bottlerocket" ]; then
  remediate_bottlerocket # reports and exits
fi

inspect_containerd
choose_strategy
lock_trust_store
precheck_linux # rejects the bundle, changing nothing, when a registry host fails against it
[ "$R_DRY_RUN" = true ] || R_COMMITTED=true
install_trust
apply_strategy

if [ "$R_DRY_RUN" = true ]; then
  R_RESULT="dry-run"
  R_REASON=""
  log "dry run: nothing changed"
  emit_json
  exit 0
fi

verify_node
finish
