# shellcheck shell=bash
# eks-ca-remediator node script, module platform.sh: which image this is, the tools it must
# have, and its trust-store layout. Joined into one script by tools/ssm_document.py.

PLATFORM=""
ANCHOR_DIR=""
ANCHOR_FILE=""
ANCHOR_PATTERN=""  # the files in ANCHOR_DIR the refresh reads
TRUST_BUNDLE=""
declare -a REFRESH=()
declare -a REFRESH_FULL=()

# need TOOL...: fail, naming the tool and the image, when one is not on PATH.
need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || fail "required command not found on PATH: $tool (image: $R_OS)"
  done
}

os_field() {
  # Value of KEY=value in an os-release file without sourcing it.
  local v
  v=$(awk -F= -v k="$1" '$1 == k { print substr($0, length(k) + 2); exit }' "${2:-/etc/os-release}" 2>/dev/null)
  v=${v#\"}
  v=${v%\"}
  v=${v#\'}
  v=${v%\'}
  printf '%s' "$v"
}

# detect_platform: R_OS and PLATFORM (linux | bottlerocket); on Linux the anchor file, the trust
# bundle containerd reads and the refresh commands. Fails on an image we do not support or that
# lacks a tool.
detect_platform() {
  local os_id os_version
  # Bottlerocket: Run Command runs in the control container, whose own os-release is amazonlinux's.
  # host-ctr mounts the host's os-release at /etc/bottlerocket-release and the container's state
  # under /.bottlerocket (bottlerocket-core-kit sources/host-ctr, withDefaultMounts).
  if [ -d /.bottlerocket ] || [ -e /etc/bottlerocket-release ]; then
    R_OS="bottlerocket"
    PLATFORM="bottlerocket"
    command -v apiclient >/dev/null 2>&1 ||
      fail "Bottlerocket detected (/.bottlerocket) but apiclient is not on PATH: run this document in the control container"
    need base64 sha256sum awk grep sed timeout mktemp
  else
    PLATFORM="linux"
    [ -r /etc/os-release ] || fail "cannot read /etc/os-release: unknown operating system"
    os_id=$(os_field ID)
    os_version=$(os_field VERSION_ID)
    case "$os_id" in
      amzn)
        case "$os_version" in
          2) R_OS="al2" ;;
          2023*) R_OS="al2023" ;;
          *) fail "unsupported Amazon Linux version (VERSION_ID must be 2 or 2023)" ;;
        esac
        ANCHOR_DIR="/etc/pki/ca-trust/source/anchors"
        ANCHOR_FILE="$ANCHOR_DIR/$OUR_NAME.pem"
        ANCHOR_PATTERN="*"
        TRUST_BUNDLE="/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"
        REFRESH=(update-ca-trust extract)
        REFRESH_FULL=(update-ca-trust extract)
        ;;
      ubuntu | debian)
        R_OS="$os_id"
        ANCHOR_DIR="/usr/local/share/ca-certificates"
        ANCHOR_FILE="$ANCHOR_DIR/$OUR_NAME.crt"
        ANCHOR_PATTERN="*.crt"
        TRUST_BUNDLE="/etc/ssl/certs/ca-certificates.crt"
        REFRESH=(update-ca-certificates)
        # --fresh also drops the links of a removed anchor (a plain run leaves them dangling).
        REFRESH_FULL=(update-ca-certificates --fresh)
        ;;
      *) fail "unsupported operating system (ID in /etc/os-release is not amzn, ubuntu or debian)" ;;
    esac
    need openssl base64 sha256sum timeout systemctl awk grep sed date flock mktemp comm sort cp readlink find "${REFRESH[0]}"
    log "os: $R_OS; anchor file $ANCHOR_FILE; trust bundle $TRUST_BUNDLE"
  fi

}
