#!/bin/bash
# strata ephemeral GPU runner bootstrap (rendered by scaler/userdata.ts).
# One instance = one JIT runner = one job. Whatever happens, the instance ends
# by shutting down, and shutdown terminates it (instance-initiated shutdown
# behaviour = terminate). No token is ever part of this script: the JIT config
# is read from SSM Parameter Store and deleted before the runner starts.
set -euo pipefail

REGION="{{REGION}}"
PARAM_PREFIX="{{PARAM_PREFIX}}"
MAX_RUNTIME_MINUTES="{{MAX_RUNTIME_MINUTES}}"
RUNNER_VERSION="{{RUNNER_VERSION}}"
RUNNER_SHA256="{{RUNNER_SHA256}}"
RUNNER_USER="{{RUNNER_USER}}"

RUNNER_DIR=/opt/actions-runner
DATA_MOUNT=/mnt/strata
PARAM_WAIT_SECONDS=300
SPOT_POLL_SECONDS=5
IMDS=http://169.254.169.254/latest
SPOT_WATCHER=""

exec > >(tee -a /var/log/strata-runner.log | logger -t strata-runner) 2>&1

log() {
  echo "strata: $(date -u +%Y-%m-%dT%H:%M:%SZ) $*"
}

# Succeeds when FILE's sha256 is SHA (64 lowercase hex digits).
verify_sha256() {
  local file="$1" want="$2" got
  got="$(sha256sum "${file}" | cut -d ' ' -f 1)"
  if [[ "${got}" != "${want}" ]]; then
    log "sha256 of ${file} is ${got}, expected ${want}: refusing to use it"
    return 1
  fi
}

# Polls IMDS for an EC2 spot interruption notice; on one, says so in the runner's console log and stops.
# shellcheck disable=SC2317  # runs in the background
watch_spot_interruption() {
  local token notice
  while :; do
    token="$(curl -fsS -X PUT "${IMDS}/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 300" 2>/dev/null || true)"
    if notice="$(curl -fsS -H "X-aws-ec2-metadata-token: ${token}" "${IMDS}/meta-data/spot/instance-action" 2>/dev/null)"; then
      log "SPOT INTERRUPTION: instance ${INSTANCE_ID:-unknown} is being interrupted by EC2 (${notice}); the job on this runner will stop within two minutes"
      return 0
    fi
    sleep "${SPOT_POLL_SECONDS}"
  done
}

# Writes the runner's job-started hook (ACTIONS_RUNNER_HOOK_JOB_STARTED): its output opens the job's log, so a
# job that fails because EC2 took its spot instance says why, and a re-run says it is on on-demand.
write_job_started_hook() {
  local file="$1" market="$2"
  {
    echo '#!/bin/bash'
    echo "echo 'strata: this job runs on ${INSTANCE_ID:-unknown}, a ${market} instance of the strata GPU fleet.'"
    if [[ "${market}" == spot ]]; then
      echo "echo 'strata: if EC2 interrupts this spot instance, the job fails with a lost runner; strata then re-runs it once on an on-demand instance.'"
    fi
  } > "${file}"
  chmod 0755 "${file}"
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
terminate() {
  local rc=$?
  if [[ -n "${SPOT_WATCHER}" ]]; then kill "${SPOT_WATCHER}" 2>/dev/null || true; fi
  log "exiting with status ${rc}; shutting down (terminates the instance)"
  sync || true
  shutdown -h now || poweroff || true
}
trap terminate EXIT

# Hard watchdog first: whatever hangs later, the instance is gone after the pool's max runtime.
shutdown -h "+${MAX_RUNTIME_MINUTES}" "strata: max runtime reached" || true

# --- instance identity via IMDSv2 ------------------------------------------
IMDS_TOKEN="$(curl -fsS --retry 10 --retry-connrefused --retry-delay 1 -X PUT "${IMDS}/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 300")"
INSTANCE_ID="$(curl -fsS --retry 10 --retry-connrefused --retry-delay 1 -H "X-aws-ec2-metadata-token: ${IMDS_TOKEN}" "${IMDS}/meta-data/instance-id")"
MARKET="$(curl -fsS --retry 3 -H "X-aws-ec2-metadata-token: ${IMDS_TOKEN}" "${IMDS}/meta-data/instance-life-cycle" || echo unknown)"
unset IMDS_TOKEN
if [[ ! "${INSTANCE_ID}" =~ ^i-[0-9a-f]+$ ]]; then
  log "could not read the instance id"
  exit 1
fi
log "instance ${INSTANCE_ID}, watchdog ${MAX_RUNTIME_MINUTES} min"
watch_spot_interruption &
SPOT_WATCHER=$!

# --- instance-store NVMe for Docker / BuildKit data ---------------------------
mapfile -t NVME_DEVICES < <(find /dev/disk/by-id/ -name 'nvme-Amazon_EC2_NVMe_Instance_Storage_*' ! -name '*-part*' -exec readlink -f {} + 2>/dev/null | sort -u)
if (( ${#NVME_DEVICES[@]} > 0 )); then
  if (( ${#NVME_DEVICES[@]} > 1 )) && command -v mdadm >/dev/null 2>&1; then
    log "striping ${#NVME_DEVICES[@]} instance-store volumes"
    mdadm --create /dev/md/strata --run --level=0 --raid-devices="${#NVME_DEVICES[@]}" "${NVME_DEVICES[@]}"
    DATA_DEVICE=/dev/md/strata
  else
    DATA_DEVICE="${NVME_DEVICES[0]}"
  fi
  log "formatting ${DATA_DEVICE}"
  mkfs.ext4 -q -F -E nodiscard -m 0 "${DATA_DEVICE}"
  mkdir -p "${DATA_MOUNT}"
  mount -o noatime "${DATA_DEVICE}" "${DATA_MOUNT}"
  mkdir -p "${DATA_MOUNT}/docker" "${DATA_MOUNT}/work"
  if systemctl list-unit-files docker.service >/dev/null 2>&1; then
    systemctl stop docker.service docker.socket || true
  fi
  mkdir -p /var/lib/docker
  mount --bind "${DATA_MOUNT}/docker" /var/lib/docker
  if systemctl list-unit-files docker.service >/dev/null 2>&1; then
    systemctl start docker.service
  fi
else
  log "no instance-store NVMe found; Docker stays on the root volume"
fi

# --- JIT config: read once, delete, never written to disk ----------------------
PARAM_NAME="${PARAM_PREFIX}${INSTANCE_ID}"
JIT_CONFIG=""
deadline=$(( SECONDS + PARAM_WAIT_SECONDS ))
while (( SECONDS < deadline )); do
  if JIT_CONFIG="$(aws ssm get-parameter --region "${REGION}" --name "${PARAM_NAME}" --with-decryption --query Parameter.Value --output text 2>/dev/null)" && [[ -n "${JIT_CONFIG}" && "${JIT_CONFIG}" != "None" ]]; then
    break
  fi
  JIT_CONFIG=""
  sleep 3
done
if [[ -z "${JIT_CONFIG}" ]]; then
  log "no JIT config at ${PARAM_NAME} after ${PARAM_WAIT_SECONDS}s"
  exit 1
fi
# Deleting is also the claim: if the scaler deleted it first (job cancelled), do not start.
if ! aws ssm delete-parameter --region "${REGION}" --name "${PARAM_NAME}"; then
  log "could not delete ${PARAM_NAME}; not starting the runner"
  exit 1
fi
log "JIT config read and deleted"

# --- runner -------------------------------------------------------------------
if ! id -u "${RUNNER_USER}" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash "${RUNNER_USER}"
fi
if getent group docker >/dev/null 2>&1; then
  usermod -aG docker "${RUNNER_USER}"
fi

if [[ ! -x "${RUNNER_DIR}/run.sh" ]]; then
  # The pinned checksum is of the linux-x64 package.
  if [[ "$(uname -m)" != x86_64 ]]; then
    log "unsupported architecture $(uname -m): the pinned actions runner checksum is for linux-x64 (or bake the runner into the AMI at ${RUNNER_DIR})"
    exit 1
  fi
  log "downloading actions runner ${RUNNER_VERSION} (x64)"
  mkdir -p "${RUNNER_DIR}"
  TARBALL="$(mktemp /tmp/actions-runner.XXXXXX)"
  curl -fsSL --retry 5 --retry-delay 2 -o "${TARBALL}" \
    "https://github.com/actions/runner/releases/download/v${RUNNER_VERSION}/actions-runner-linux-x64-${RUNNER_VERSION}.tar.gz"
  verify_sha256 "${TARBALL}" "${RUNNER_SHA256}"
  tar -xzf "${TARBALL}" -C "${RUNNER_DIR}"
  rm -f "${TARBALL}"
  "${RUNNER_DIR}/bin/installdependencies.sh" || log "installdependencies.sh failed; continuing"
fi
if mountpoint -q "${DATA_MOUNT}"; then
  rm -rf "${RUNNER_DIR}/_work"
  ln -s "${DATA_MOUNT}/work" "${RUNNER_DIR}/_work"
  chown "${RUNNER_USER}:" "${DATA_MOUNT}/work"
fi
chown -R "${RUNNER_USER}:" "${RUNNER_DIR}"

write_job_started_hook "${RUNNER_DIR}/strata-job-started.sh" "${MARKET}"
log "starting runner (one job)"
cd "${RUNNER_DIR}"
set +e
# The runner takes its jitconfig argument also from ACTIONS_RUNNER_INPUT_JITCONFIG (actions/runner CommandSettings.cs: every
# ACTIONS_RUNNER_INPUT_<ARG> variable, jitconfig masked as a secret and removed from its environment), so the config
# never appears on a command line, which every local user can read in /proc/<pid>/cmdline.
ACTIONS_RUNNER_HOOK_JOB_STARTED="${RUNNER_DIR}/strata-job-started.sh" ACTIONS_RUNNER_INPUT_JITCONFIG="${JIT_CONFIG}" runuser -u "${RUNNER_USER}" -- ./run.sh
RUNNER_STATUS=$?
set -e
unset JIT_CONFIG
log "runner exited with status ${RUNNER_STATUS}"
exit "${RUNNER_STATUS}"
