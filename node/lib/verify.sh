# shellcheck shell=bash
# eks-ca-remediator node script, module verify.sh: what proves the CA works, after the change:
# TLS verification of the registries and the canary pull through containerd. Joined into one
# script by tools/ssm_document.py.

PROXY_HTTPS=""
PROXY_NO=""

host_port() { if [[ "$1" == *:* ]]; then printf '%s' "$1"; else printf '%s:443' "$1"; fi; }

# env_value TEXT NAME: the value of NAME=value in TEXT (one assignment a line).
env_value() { printf '%s\n' "$1" | awk -v k="$2" 'index($0, k "=") == 1 { print substr($0, length(k) + 2); exit }'; }

# containerd_proxy PID: PROXY_HTTPS and PROXY_NO, the proxy settings containerd itself pulls
# with: Go's net/http reads HTTPS_PROXY (else https_proxy) and NO_PROXY (else no_proxy)
# (golang.org/x/net/http/httpproxy FromEnvironment). Read from the running process's environment
# (/proc/PID/environ: the unit's Environment= and EnvironmentFile= of every drop-in, as systemd
# set them), else from `systemctl show -p Environment containerd` (systemd 219 has it; values
# with blanks are not modelled there).
containerd_proxy() {
  local text=""
  [ -r "/proc/$1/environ" ] && text=$(tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null)
  if [ -z "$text" ]; then
    text=$(timeout 10 systemctl show -p Environment containerd 2>/dev/null | sed -n 's/^Environment=//p' | tr ' ' '\n')
  fi
  PROXY_HTTPS=$(env_value "$text" HTTPS_PROXY)
  [ -n "$PROXY_HTTPS" ] || PROXY_HTTPS=$(env_value "$text" https_proxy)
  PROXY_NO=$(env_value "$text" NO_PROXY)
  [ -n "$PROXY_NO" ] || PROXY_NO=$(env_value "$text" no_proxy)
  [ -z "$PROXY_HTTPS" ] || log "containerd's HTTPS proxy: $PROXY_HTTPS (NO_PROXY '${PROXY_NO}')"
}

# proxy_for HOST:PORT: the proxy containerd uses for HOST:PORT, empty when it connects directly.
# NO_PROXY as Go reads it (httpproxy useProxy): "*" matches all; "example.com" the host and its
# subdomains, ".example.com" / "*.example.com" subdomains only; an entry with a port only that
# port. localhost and loopback addresses never go through a proxy.
proxy_for() {
  local hp=$1 host entry ehost eport
  local -a entries=()
  [ -n "$PROXY_HTTPS" ] || return 0
  host=${hp%:*}
  case "$host" in localhost | 127.* | ::1) return 0 ;; esac
  IFS=',' read -r -a entries <<<"$PROXY_NO"
  for entry in ${entries[@]+"${entries[@]}"}; do
    entry=$(printf '%s' "$entry" | tr -d ' ' | tr '[:upper:]' '[:lower:]')
    [ -n "$entry" ] || continue
    [ "$entry" = "*" ] && return 0
    ehost=$entry eport=""
    if [[ "$entry" == *:* ]]; then ehost=${entry%:*} eport=${entry##*:}; fi
    [ -z "$eport" ] || [ "$eport" = "${hp##*:}" ] || continue
    ehost=${ehost#\*}
    if [[ "$ehost" == .* ]]; then
      [[ "$host" == *"$ehost" ]] && return 0
    elif [ "$host" = "$ehost" ] || [[ "$host" == *".$ehost" ]]; then
      return 0
    fi
  done
  printf '%s' "$PROXY_HTTPS"
}

# verify_tls CAFILE: one result per registry host, through the proxy containerd uses for it;
# failures go to FAILURES. The pre-check (precheck.sh) and the final check both use it.
# - direct: openssl s_client against CAFILE only where openssl can be told so (-no-CApath:
#   1.1.0+, -no-CAstore: 3.0+; OpenSSL 1.0.2 has neither and also loads its default store).
#   Without openssl (Bottlerocket's control container): curl --cacert, as through a proxy.
# - through an http:// proxy: `openssl s_client -proxy host:port` where s_client has it (OpenSSL
#   1.1.0+: the 1.1.1 manual lists "-proxy host:port", the 1.0.x one has none, e.g. NetBSD 7's
#   openssl_s_client(1)); else curl --proxy --cacert (AL2 ships OpenSSL 1.0.2k and curl 8.3.0:
#   docker-library/official-images pull request #20945; "The curl package is installed by
#   default in Amazon Linux 2": amazonlinux/amazon-linux-2023 issue #149). Any HTTP answer
#   through the tunnel means the handshake verified; curl exit 60 is a certificate failure.
#   curl gets an empty --capath too: "If this option is set, the default capath value is
#   ignored" (curl's --capath manual, since 7.9.8), so only CAFILE is trusted.
verify_tls() {
  local cafile=$1 h hp name out rc why help="" proxy p via attempt
  local -a opts=() cmd=()
  if command -v openssl >/dev/null 2>&1; then help=$(timeout 10 openssl s_client -help 2>&1); fi
  mkdir -p "$WORK/nocapath"
  if [[ "$help" == *-no-CApath* ]]; then opts+=(-no-CApath); fi
  if [[ "$help" == *-no-CAstore* ]]; then opts+=(-no-CAstore); fi
  for h in ${HOSTS[@]+"${HOSTS[@]}"}; do
    hp=$(host_port "$h")
    name=${hp%:*}
    proxy=$(proxy_for "$hp")
    p=${proxy#*://}
    p=${p%%/*}
    via=""
    cmd=()
    if [ -z "$proxy" ] && [ -n "$help" ]; then
      cmd=(openssl s_client -connect "$hp")
    elif [ -n "$proxy" ] && [[ "$proxy" != https://* ]] && [[ "$p" != *@* ]] && [[ "$help" == *" -proxy "* ]]; then
      [[ "$p" == *:* ]] || p="$p:80"
      via=" through proxy $p (openssl)"
      cmd=(openssl s_client -proxy "$p" -connect "$hp")
    elif command -v curl >/dev/null 2>&1; then
      cmd=(curl -sS -o /dev/null --max-time 15 --cacert "$cafile" --capath "$WORK/nocapath")
      if [ -n "$proxy" ]; then
        via=" through proxy ${proxy%%@*} (curl)"
        cmd+=(--proxy "$proxy")
      else
        cmd+=(--noproxy "*")
      fi
      cmd+=("https://$hp/v2/")
    fi
    if [ "${#cmd[@]}" -eq 0 ]; then
      out="no openssl (with -proxy where containerd uses a proxy) and no curl to verify TLS with"
      rc=1
    else
      [ "${cmd[0]}" = curl ] || cmd+=(-servername "$name" -verify_return_error -CAfile "$cafile" ${opts[@]+"${opts[@]}"})
      # The verdict is read from stdout alone: openssl's stderr lines ("depth=...", "DONE") can
      # land inside a stdout line when both share one pipe. An exit status 0 without the
      # verdict line is no answer: asked once more.
      for attempt in 1 2; do
        out=$(timeout 20 ${cmd[@]+"${cmd[@]}"} </dev/null 2>"$WORK/tls.err")
        rc=$?
        if [ "$rc" -eq 0 ] && [ "${cmd[0]}" = curl ]; then out="Verify return code: 0 (ok)"; fi
        if [ "$rc" -ne 0 ] || [[ "$out" == *"Verify return code: "* ]]; then break; fi
        log "TLS verification of $hp$via: no verdict (attempt $attempt)"
      done
      out="$out"$'\n'"$(head -c 4000 "$WORK/tls.err" 2>/dev/null)"
    fi
    R_VERIFY_HOSTS+=("$h")
    if [ "$rc" -eq 0 ] && [[ "$out" == *"Verify return code: 0 (ok)"* ]]; then
      R_VERIFY_RESULTS+=("ok")
      log "TLS verification of $hp$via against $cafile: ok"
    else
      if [ "$rc" -eq 124 ]; then
        why="timed out after 20 s"
      else
        why=$(printf '%s\n' "$out" | grep -Ei 'verify error|errno|connect:|unable|refused|error|curl|proxy|Verify return code' | head -n 1 | head -c 300)
        [ -n "$why" ] || why="exit status $rc"
      fi
      R_VERIFY_RESULTS+=("failed: $why$via")
      FAILURES+=("TLS verification of $h failed")
      log "TLS verification of $hp$via: failed: $why"
    fi
  done
}

# The canary must pull through the running containerd daemon, the process whose CA pool is
# cached, with exactly the hosts configuration CRI uses (else it can pass where kubelet fails):
# - crictl: CRI itself, what kubelet uses.
# - else containerd >= 2's `ctr images pull`, which pulls through the daemon's Transfer service
#   (with --local it would pull in ctr's own process and prove nothing), given as --hosts-dir
#   what CRI reads for the canary's registry (cri_hosts_dir): on the Transfer path CRI's
#   config_path itself, which the daemon then takes as one directory exactly as for CRI
#   (cmd/ctr/commands/images/pull.go: registry.WithHostDir(--hosts-dir)); on the local path the
#   root CRI would pick for that host.
# containerd 1.x's ctr pulls client-side by default (containerd cmd/ctr/commands/images/pull.go
# at v1.7: `--local` defaults to true), so without crictl a 1.x node has no honest canary: it is
# reported unavailable, not failed.
run_canary() {
  local out rc dir
  local -a cmd=()
  if [ -n "$CRICTL" ]; then
    cmd=(crictl --runtime-endpoint "unix://$SOCKET" pull "$CANARY_IMAGE")
    R_LEVEL="cri-pull"
  elif [ -n "$CTRD_MAJOR" ] && [ "$CTRD_MAJOR" -ge 2 ]; then
    cmd=(ctr --address "$SOCKET" --namespace k8s.io images pull)
    dir=$(cri_hosts_dir "${CANARY_IMAGE%%/*}")
    if [ -n "$dir" ]; then cmd+=(--hosts-dir "$dir"); fi
    cmd+=("$CANARY_IMAGE")
    R_LEVEL="daemon-pull"
  else
    R_CANARY="unavailable: no crictl on $R_OS, and ctr of containerd ${R_CONTAINERD_VERSION:-unknown} pulls in its own process, not through the daemon"
    return 0
  fi
  log "canary: ${cmd[*]}"
  out=$(timeout 120 ${cmd[@]+"${cmd[@]}"} 2>&1)
  rc=$?
  out=$(printf '%s\n' "$out" | grep -v '^[[:space:]]*$' | tail -n 1 | head -c 600)
  canary_outcome "$rc" "$out" "${cmd[0]}"
}

# canary_outcome STATUS OUTPUT TOOL: what the canary's result proves.
# - ok: the pull through containerd worked (R_LEVEL stays cri-pull / daemon-pull).
# - an x509/TLS error, a timeout, anything else: failed.
# - the registry answered with an HTTP refusal AFTER containerd's own TLS handshake verified its
#   certificate (401/403: credentials needed; 404: no such image): the CA is proven inside the
#   daemon, the pull itself is not: success at tls-only, the reason in warnings. containerd words
#   them (core/remotes/docker/resolver.go and core/remotes/errors/errors.go at v2.1.4, the same
#   in 1.x): "unexpected status from HEAD request to https://...: 401 Unauthorized", the
#   registry's error codes ("UNAUTHORIZED", "DENIED"; errcode.go), "<ref>: not found" for a
#   404. "no resolve hosts: not found" is no answer from any registry: failed.
canary_outcome() {
  local rc=$1 out=$2 tool=$3
  if [ "$rc" -eq 0 ]; then
    R_CANARY="ok"
  elif [ "$rc" -eq 124 ]; then
    R_CANARY="failed: $tool pull timed out after 120 s"
  elif printf '%s' "$out" | grep -qiE 'x509|certificate|tls:|handshake|no resolve hosts'; then
    R_CANARY="failed: $out"
  elif printf '%s' "$out" | grep -qE 'unexpected status from [A-Z]+ request to https://[^ ]*: 40[134] |(UNAUTHORIZED|DENIED|NAME_UNKNOWN|MANIFEST_UNKNOWN)|: not found'; then
    R_CANARY="tls-proven: the registry refused the pull after containerd verified its certificate: $out"
    R_LEVEL="tls-only"
    warn "canary $CANARY_IMAGE: containerd's TLS handshake with the registry succeeded (the CA works inside containerd) but the registry refused the pull (credentials needed, or no such image): proven at tls-only; an anonymously pullable canary image gives the strongest proof"
  else
    R_CANARY="failed: $out"
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
