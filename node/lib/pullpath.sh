# shellcheck shell=bash
# eks-ca-remediator node script, module pullpath.sh: containerd's effective configuration and
# the path a CRI pull takes through it (which hosts directories it reads, whether a hosts.toml
# strategy can work). Joined into one script by tools/ssm_document.py.

readonly CERTS_D="/etc/containerd/certs.d"
# containerd's default config file (cmd/containerd/command/main.go: the --config/-c flag's
# Value is defaults.DefaultConfigDir/config.toml); containerd_config_file may find another.
readonly CONTAINERD_CONFIG_DEFAULT="/etc/containerd/config.toml"
CONTAINERD_CONFIG="$CONTAINERD_CONFIG_DEFAULT"
CFG_CONFIG_PATH=""
CFG_ADDRESS=""
CFG_VERSION=""
CFG_LOCAL_WHY=""
CRI_PULL=""
CRI_PULL_WHY=""
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

# read_containerd_config: the registry config_path, gRPC address and CRI image settings of the
# running configuration: CONTAINERD_CONFIG, then each of its `imports` (later files override
# earlier ones, as containerd merges them). Where a setting lives depends on each file's config
# version (containerd docs/cri/config.md; plugins/cri/images/plugin.go configMigration moves
# version 2's keys into version 3's images plugin): 1 `plugins.cri` (+ `.containerd` for the
# snapshot settings), 2 `plugins."io.containerd.grpc.v1.cri"` (likewise), 3
# `plugins."io.containerd.cri.v1.images"` (AL2023's nodeadm writes version 3).
# CFG_LOCAL_WHY: the first setting that makes containerd >= 2.1 pull locally (see cri_pull_path).
read_containerd_config() {
  local f v img sub imports pattern keys value
  local -a files=()
  CFG_CONFIG_PATH=""
  CFG_ADDRESS=""
  CFG_VERSION=""
  CFG_LOCAL_WHY=""
  [ -r "$CONTAINERD_CONFIG" ] || return 0
  files=("$CONTAINERD_CONFIG")
  # imports = ["/etc/containerd/config.d/*.toml", ...]: glob patterns, on one line.
  imports=$(toml_get "$(toml_keys "$CONTAINERD_CONFIG")" imports | tr -d '[]"\047' | tr ',' ' ')
  # shellcheck disable=SC2086  # the patterns are globs, expanded here on purpose
  for pattern in $imports; do
    for f in $pattern; do [ -r "$f" ] && files+=("$f"); done
  done
  local use_local="" discard="" annotations="" downloads="" sync_fs="" legacy=""
  for f in ${files[@]+"${files[@]}"}; do
    keys=$(toml_keys "$f")
    v=$(toml_get "$keys" version)
    [ -n "$v" ] || v=1
    [ "$f" = "$CONTAINERD_CONFIG" ] && CFG_VERSION="$v"
    case "$v" in
      1) img='plugins.cri' sub='plugins.cri.containerd' ;;
      2) img='plugins."io.containerd.grpc.v1.cri"' sub='plugins."io.containerd.grpc.v1.cri".containerd' ;;
      *) img='plugins."io.containerd.cri.v1.images"' sub="$img" ;;
    esac
    # A config_path that is present overrides, also when empty; the others only when set.
    if value=$(toml_get "$keys" "$img.registry.config_path"); then CFG_CONFIG_PATH="$value"; fi
    value=$(toml_get "$keys" grpc.address) && [ -n "$value" ] && CFG_ADDRESS="$value"
    # use_local_image_pull exists only in version 3 (configMigration does not move it).
    if [ "$v" -ge 3 ] 2>/dev/null; then
      value=$(toml_get "$keys" "$img.use_local_image_pull") && use_local="$value"
    fi
    value=$(toml_get "$keys" "$sub.discard_unpacked_layers") && discard="$value"
    value=$(toml_get "$keys" "$sub.disable_snapshot_annotations") && annotations="$value"
    value=$(toml_get "$keys" "$img.max_concurrent_downloads") && downloads="$value"
    value=$(toml_get "$keys" "$img.image_pull_with_sync_fs") && sync_fs="$value"
    if printf '%s\n' "$keys" | grep -qF -e "$img.registry.mirrors." -e "$img.registry.configs." -e "$img.registry.auths."; then
      legacy=true
    fi
  done
  # containerd v2.1+ internal/cri/config/config.go CheckLocalImagePullConfigs: on Linux these
  # make CRI fall back to local image pull (first match, as containerd logs it).
  if [ "$use_local" = true ]; then
    CFG_LOCAL_WHY="use_local_image_pull = true"
  elif [ "$annotations" = false ]; then
    CFG_LOCAL_WHY="disable_snapshot_annotations = false"
  elif [ "$discard" = true ]; then
    CFG_LOCAL_WHY="discard_unpacked_layers = true"
  elif [ -n "$legacy" ]; then
    CFG_LOCAL_WHY="registry mirrors/configs/auths are set"
  elif [ -n "$downloads" ] && [ "$downloads" != 3 ]; then
    CFG_LOCAL_WHY="max_concurrent_downloads = $downloads"
  elif [ "$sync_fs" = true ]; then
    CFG_LOCAL_WHY="image_pull_with_sync_fs = true"
  fi
}

# cri_pull_path: CRI_PULL, how the running containerd's CRI plugin pulls, and CRI_PULL_WHY.
# - local: containerd's resolver in the daemon; it reads config_path as a colon-separated list of
#   roots, and for a host uses the first root holding a <host> or _default directory
#   (internal/cri/server/images/image_pull.go registryHosts / hostDirFromRoots;
#   core/remotes/docker/config/hosts.go hostPaths). containerd 1.x and 2.0 always pull so.
# - transfer: containerd >= 2.1 pulls through its Transfer service unless a setting above makes
#   it fall back (plugins/cri/images/plugin.go calls CheckLocalImagePullConfigs when
#   use_local_image_pull is false; image_pull.go: "use transfer service by default"). That path
#   passes config_path to registry.WithHostDir, which takes it as ONE directory
#   (core/transfer/registry/registry.go: config.HostDirFromRoot(hostDir)): a colon-separated
#   config_path names no directory at all (containerd issues #12415, #12808; unfixed in every
#   release up to v2.4.0-beta.0).
# - unknown: containerd's version could not be read.
cri_pull_path() {
  if [ -z "$CTRD_MAJOR" ]; then
    CRI_PULL="unknown"
    CRI_PULL_WHY="containerd's version is unknown"
  elif [ "$CTRD_MAJOR" -lt 2 ] || { [ "$CTRD_MAJOR" -eq 2 ] && [ "$CTRD_MINOR" -lt 1 ]; }; then
    CRI_PULL="local"
    CRI_PULL_WHY="containerd $CTRD_MAJOR.$CTRD_MINOR's CRI pulls with its own resolver"
  elif [ -n "$CFG_LOCAL_WHY" ]; then
    CRI_PULL="local"
    CRI_PULL_WHY="containerd $CTRD_MAJOR.$CTRD_MINOR falls back to local pull ($CFG_LOCAL_WHY)"
  else
    CRI_PULL="transfer"
    CRI_PULL_WHY="containerd $CTRD_MAJOR.$CTRD_MINOR's CRI pulls through its Transfer service"
  fi
}

# cri_hosts_dir HOST: the hosts directory root CRI reads for HOST (empty: none), by CRI_PULL.
cri_hosts_dir() {
  local dir
  local IFS=':'
  [ -n "$CFG_CONFIG_PATH" ] || return 0
  if [ "$CRI_PULL" = "transfer" ]; then
    printf '%s' "$CFG_CONFIG_PATH"
    return 0
  fi
  for dir in $CFG_CONFIG_PATH; do
    if [ -d "$dir/$1" ] || [ -d "$dir/_default" ]; then
      printf '%s' "$dir"
      return 0
    fi
  done
}

# hosts_toml_blocker HOST: why CRI would not read $CERTS_D/HOST/hosts.toml (empty: it would).
hosts_toml_blocker() {
  local dir first=""
  local IFS=':'
  if [ -z "$CFG_CONFIG_PATH" ]; then
    printf "containerd's registry config_path is empty, so it reads no hosts.toml"
    return 0
  fi
  case "$CRI_PULL" in
    transfer | unknown)
      if [ "${CFG_CONFIG_PATH%/}" != "$CERTS_D" ]; then
        [ "$CRI_PULL" = transfer ] || printf '%s, so CRI may pull through the Transfer service: ' "$CRI_PULL_WHY"
        [ "$CRI_PULL" = unknown ] || printf '%s' "$CRI_PULL_WHY"
        printf ', which ignores hosts.toml unless config_path is exactly %s (it takes '\''%s'\'' as one directory; containerd issues #12415, #12808)' \
          "$CERTS_D" "$CFG_CONFIG_PATH"
      fi
      ;;
    local)
      for dir in $CFG_CONFIG_PATH; do
        dir=${dir%/}
        if [ "$dir" = "$CERTS_D" ]; then
          [ -z "$first" ] || printf 'containerd reads %s for %s before %s' "$first" "$1" "$CERTS_D"
          return 0
        fi
        if [ -z "$first" ] && { [ -d "$dir/$1" ] || [ -d "$dir/_default" ]; }; then first="$dir"; fi
      done
      printf "containerd's registry config_path ('%s') does not include %s, so a hosts.toml there would be ignored" "$CFG_CONFIG_PATH" "$CERTS_D"
      ;;
  esac
}

# choose_strategy: STRATEGY_EFFECTIVE, the strategy that can work on this node: hosts-toml only
# where CRI will read the file for every host (hosts_toml_blocker), else the trust store (auto)
# with the reason in warnings.
choose_strategy() {
  local h why=""
  cri_pull_path
  R_PULL_PATH="$CRI_PULL"
  log "CRI pull path: $CRI_PULL ($CRI_PULL_WHY)"
  STRATEGY_EFFECTIVE="$STRATEGY"
  [ "$STRATEGY" = "hosts-toml" ] || return 0
  for h in ${HOSTS[@]+"${HOSTS[@]}"}; do
    why=$(hosts_toml_blocker "$h")
    [ -z "$why" ] || break
  done
  if [ -n "$why" ]; then
    STRATEGY_EFFECTIVE="auto"
    warn "hosts-toml not applicable: $why; used the trust store (auto) instead"
  fi
}
