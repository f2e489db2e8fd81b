# shellcheck shell=bash
# eks-ca-remediator node script, module params.sh: the SSM parameters, re-validated with strict
# patterns (the SSM document validates them too). Joined into one script by tools/ssm_document.py.

readonly MAX_BUNDLE_B64=40000
readonly HOST_RE='^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[0-9]{1,5})?$'
readonly IMAGE_RE='^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$'
CA_B64=""
STRATEGY=""
CANARY_IMAGE=""
declare -a HOSTS=()

reject() { fail "rejected parameter: $1" 2; }

# read_parameters: CA_B64, STRATEGY, HOSTS, CANARY_IMAGE, R_DRY_RUN from the SSM_* variables, or
# fail with exit status 2 before anything is touched.
read_parameters() {
  local hosts_raw dry_run_raw h port
  if [ -z "${SSM_CaBundle+set}" ]; then
    fail "SSM_CaBundle is not set: SSM agent too old for ENV_VAR interpolation, needs 3.3.2746+" 2
  fi
  CA_B64="$SSM_CaBundle"
  STRATEGY="${SSM_Strategy-auto}"
  hosts_raw="${SSM_RegistryHosts-}"
  CANARY_IMAGE="${SSM_CanaryImage-}"
  dry_run_raw="${SSM_DryRun-false}"

  case "$dry_run_raw" in
    true) R_DRY_RUN=true ;;
    false) R_DRY_RUN=false ;;
    *) reject "SSM_DryRun must be exactly 'true' or 'false'" ;;
  esac
  case "$STRATEGY" in
    auto | restart | hosts-toml) R_STRATEGY_REQ="$STRATEGY" ;;
    *)
      R_STRATEGY_REQ="invalid"
      reject "SSM_Strategy must be one of auto, restart, hosts-toml"
      ;;
  esac
  if [ -z "$CA_B64" ]; then
    reject "SSM_CaBundle is empty"
  fi
  if [ "${#CA_B64}" -gt "$MAX_BUNDLE_B64" ]; then
    reject "SSM_CaBundle is longer than $MAX_BUNDLE_B64 characters"
  fi
  if ! [[ "$CA_B64" =~ ^[A-Za-z0-9+/]+={0,2}$ ]] || [ $((${#CA_B64} % 4)) -ne 0 ]; then
    reject "SSM_CaBundle is not base64 (only A-Z a-z 0-9 + / and '=' padding, no whitespace)"
  fi

  if [ -n "$hosts_raw" ]; then
    if [ "${#hosts_raw}" -gt 2000 ] || ! [[ "$hosts_raw" =~ ^[a-z0-9.:,-]+$ ]]; then
      reject "SSM_RegistryHosts must be a comma-separated list of host[:port] (a-z 0-9 . - :)"
    fi
    IFS=',' read -r -a HOSTS <<<"$hosts_raw"
    if [ "${#HOSTS[@]}" -gt 20 ] || [[ "$hosts_raw" == *, ]] || [[ "$hosts_raw" == ,* ]]; then
      reject "SSM_RegistryHosts must hold 1 to 20 comma-separated entries"
    fi
    for h in ${HOSTS[@]+"${HOSTS[@]}"}; do
      if ! [[ "$h" =~ $HOST_RE ]] || [[ "$h" == *..* ]]; then
        reject "SSM_RegistryHosts entry is not a valid host[:port]"
      fi
      if [[ "$h" == *:* ]]; then
        port="${h##*:}"
        if [ "$((10#$port))" -lt 1 ] || [ "$((10#$port))" -gt 65535 ]; then
          reject "SSM_RegistryHosts entry has a port outside 1-65535"
        fi
      fi
    done
  fi

  if [ -n "$CANARY_IMAGE" ]; then
    if [ "${#CANARY_IMAGE}" -gt 512 ] || ! [[ "$CANARY_IMAGE" =~ $IMAGE_RE ]]; then
      reject "SSM_CanaryImage is not a valid image reference (registry/repository[:tag][@sha256:digest])"
    fi
  fi

  if [ "$STRATEGY" = "hosts-toml" ] && [ "${#HOSTS[@]}" -eq 0 ]; then
    fail "strategy hosts-toml needs at least one registry host in RegistryHosts" 2
  fi
}
