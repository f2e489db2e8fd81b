# shellcheck shell=bash
# eks-ca-remediator node script, module pullpath.sh: containerd's effective configuration and
# the path a CRI pull takes through it (which hosts directories it reads, whether a hosts.toml
# strategy can work). Joined into one script by tools/ssm_document.py.

readonly CERTS_D="/etc/containerd/certs.d"
readonly CONTAINERD_CONFIG="/etc/containerd/config.toml"
CFG_CONFIG_PATH=""
CFG_ADDRESS=""
CFG_LOCAL_PULL=""
CFG_DISCARD=""
CFG_VERSION=""
STRATEGY_EFFECTIVE=""

# toml_keys FILE: "section.key<TAB>value" for every key of a containerd config file (the subset
# of TOML containerd configs use: [sections] with "double" or 'single' quoted parts, key =
# value, # comments). Section names are normalised to double quotes without blanks.
toml_keys() {
  awk '
    function norm(h) { gsub(/[ \t]/, "", h); gsub(/\047/, "\"", h); return h }
    /^[ \t]*(#|$)/ { next }
    /^[ \t]*\[/ {
      sec = $0; sub(/^[ \t]*\[+/, "", sec); sub(/\]+[ \t]*(#.*)?$/, "", sec); sec = norm(sec); next
    }
    index($0, "=") > 0 {
      k = substr($0, 1, index($0, "=") - 1); k = norm(k)
      v = substr($0, index($0, "=") + 1); sub(/^[ \t]+/, "", v); sub(/[ \t]+$/, "", v)
      if (v ~ /^"/) { v = substr(v, 2); sub(/".*$/, "", v) }
      else if (v ~ /^\047/) { v = substr(v, 2); sub(/\047.*$/, "", v) }
      else sub(/[ \t]*#.*$/, "", v)
      print (sec == "" ? k : sec "." k) "\t" v
    }' "$1" 2>/dev/null
}

# toml_get KEYS KEY: the value of KEY in toml_keys output KEYS; status 1 when KEY is absent.
toml_get() {
  printf '%s\n' "$1" | awk -F'\t' -v k="$2" '$1 == k { v = $2; found = 1 } END { printf "%s", v; exit !found }'
}

# Effective registry config_path, gRPC address and CRI pull mode of the running configuration:
# config.toml, then each of its `imports` (later files override earlier ones, as containerd
# merges them). The key depends on each file's config version: 1 `plugins.cri`, 2
# `plugins."io.containerd.grpc.v1.cri"`, 3 `plugins."io.containerd.cri.v1.images"` (containerd
# docs/cri/config.md; AL2023's nodeadm writes version 3). An empty config_path means containerd
# reads no hosts.toml at all.
read_containerd_config() {
  local f v key imports pattern keys value
  local -a files=()
  CFG_CONFIG_PATH=""
  CFG_ADDRESS=""
  CFG_LOCAL_PULL=""
  CFG_DISCARD=""
  CFG_VERSION=""
  [ -r "$CONTAINERD_CONFIG" ] || return 0
  files=("$CONTAINERD_CONFIG")
  # imports = ["/etc/containerd/config.d/*.toml", ...]: glob patterns, on one line.
  imports=$(toml_get "$(toml_keys "$CONTAINERD_CONFIG")" imports | tr -d '[]"\047' | tr ',' ' ')
  # shellcheck disable=SC2086  # the patterns are globs, expanded here on purpose
  for pattern in $imports; do
    for f in $pattern; do [ -r "$f" ] && files+=("$f"); done
  done
  for f in ${files[@]+"${files[@]}"}; do
    keys=$(toml_keys "$f")
    v=$(toml_get "$keys" version)
    [ -n "$v" ] || v=1
    [ "$f" = "$CONTAINERD_CONFIG" ] && CFG_VERSION="$v"
    case "$v" in
      1) key='plugins.cri' ;;
      2) key='plugins."io.containerd.grpc.v1.cri"' ;;
      *) key='plugins."io.containerd.cri.v1.images"' ;;
    esac
    # A config_path that is present overrides, also when empty; the others only when set.
    if value=$(toml_get "$keys" "$key.registry.config_path"); then CFG_CONFIG_PATH="$value"; fi
    value=$(toml_get "$keys" grpc.address) && [ -n "$value" ] && CFG_ADDRESS="$value"
    if [ "$v" -ge 3 ] 2>/dev/null; then
      value=$(toml_get "$keys" "$key.use_local_image_pull") && [ -n "$value" ] && CFG_LOCAL_PULL="$value"
      value=$(toml_get "$keys" "$key.discard_unpacked_layers") && [ -n "$value" ] && CFG_DISCARD="$value"
    fi
  done
}

# Is /etc/containerd/certs.d one of the directories of config_path?
certs_d_on_path() {
  local dir
  local IFS=':'
  for dir in $CFG_CONFIG_PATH; do
    [ "${dir%/}" = "$CERTS_D" ] && return 0
  done
  return 1
}

# choose_strategy: STRATEGY_EFFECTIVE, the strategy that can work on this node.
# hosts-toml applies only where containerd reads /etc/containerd/certs.d. containerd 2.x's
# Transfer-service pull (CRI's default unless use_local_image_pull, or discard_unpacked_layers
# which makes it fall back to local pulls) ignores hosts.toml when config_path lists several
# directories (containerd issues #12415, #12808). Otherwise: the trust store path (auto).
choose_strategy() {
  local why
  STRATEGY_EFFECTIVE="$STRATEGY"
  if [ "$STRATEGY" = "hosts-toml" ]; then
    why=""
    if ! certs_d_on_path; then
      why="containerd's registry config_path ('$CFG_CONFIG_PATH') does not include $CERTS_D, so a hosts.toml there would be ignored"
    elif [ "${R_CONTAINERD_VERSION%%.*}" -ge 2 ] 2>/dev/null && [ "${CFG_VERSION:-1}" -ge 3 ] 2>/dev/null &&
      [[ "$CFG_CONFIG_PATH" == *:* ]] && [ "$CFG_LOCAL_PULL" != true ] && [ "$CFG_DISCARD" != true ]; then
      why="containerd $R_CONTAINERD_VERSION pulls through its Transfer service, which ignores hosts.toml when config_path lists several directories ('$CFG_CONFIG_PATH')"
    fi
    if [ -n "$why" ]; then
      STRATEGY_EFFECTIVE="auto"
      warn "hosts-toml not applicable: $why; used the trust store (auto) instead"
    fi
  fi
}
