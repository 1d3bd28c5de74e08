#!/usr/bin/env bash
# Train vlx on a Cloud TPU VM pod slice: create (or reuse) the slice, install the project on every
# worker, run the same `python -m vlx.main` on all of them, stream the log, then stop or delete.
#
#   launch/tpu_pod.sh --name vlx-v5p --zone us-east5-a --accelerator-type v5p-32 --spot \
#       --config configs/alpro_pretrain.py --workdir gs://my-bucket/alpro_pt --delete \
#       -- --config.train.num_steps=1000
#
# Everything after `--` goes to vlx.main. --dry-run prints every command and runs nothing.
# See launch/README.md for costs and troubleshooting.
set -euo pipefail

NAME="vlx-${USER:-user}"
ZONE="${CLOUDSDK_COMPUTE_ZONE:-}"
PROJECT="${CLOUDSDK_CORE_PROJECT:-}"
ACCELERATOR="v5p-8"
VERSION=""               # default picked from the accelerator generation below
CAPACITY=""              # --spot | --preemptible
CONFIG="configs/alpro_pretrain.py:demo"
WORKDIR=""
MODE="train_eval"
REPO=""                  # git URL to clone on the workers; empty = copy this checkout
REF="main"
PYTHON_VERSION="3.11"
ACTION="all"             # all | create | setup | run | logs | stop | delete
AFTER=""                 # after a run: '' (keep) | stop | delete
DETACH=0
DRY_RUN=0
EXTRA=()

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; cat <<'EOF'
Options:
  --name NAME               TPU VM name (default vlx-$USER)
  --zone ZONE               e.g. us-east5-a (or CLOUDSDK_COMPUTE_ZONE)
  --project PROJECT         GCP project (or CLOUDSDK_CORE_PROJECT / gcloud default)
  --accelerator-type TYPE   e.g. v5p-8, v5p-64, v5litepod-16, v4-32, v6e-16 (default v5p-8)
  --version RUNTIME         TPU software version (default by generation, e.g. v2-alpha-tpuv5)
  --spot | --preemptible    cheaper capacity that can be reclaimed (the run checkpoints on SIGTERM)
  --config FILE[:PRESET]    vlx config (default configs/alpro_pretrain.py:demo)
  --workdir gs://BUCKET/DIR checkpoints + metrics; must be a bucket every worker can write
  --mode MODE               train | eval | train_eval (default train_eval)
  --repo URL [--ref REF]    git clone URL@REF on the workers instead of copying this checkout
  --action ACTION           all (default: create-or-reuse, setup, run) | create | setup | run |
                            logs | stop | delete
  --detach                  run in the background on the workers (then: --action logs)
  --stop | --delete         stop / delete the slice when the run ends
  --dry-run                 print the commands, run nothing
EOF
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --zone) ZONE="$2"; shift 2 ;;
    --project) PROJECT="$2"; shift 2 ;;
    --accelerator-type) ACCELERATOR="$2"; shift 2 ;;
    --version) VERSION="$2"; shift 2 ;;
    --spot) CAPACITY="--spot"; shift ;;
    --preemptible) CAPACITY="--preemptible"; shift ;;
    --config) CONFIG="$2"; shift 2 ;;
    --workdir) WORKDIR="$2"; shift 2 ;;
    --mode) MODE="$2"; shift 2 ;;
    --repo) REPO="$2"; shift 2 ;;
    --ref) REF="$2"; shift 2 ;;
    --action) ACTION="$2"; shift 2 ;;
    --detach) DETACH=1; shift ;;
    --stop) AFTER="stop"; shift ;;
    --delete) AFTER="delete"; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "error: $*" >&2; exit 2; }
[[ -n "$ZONE" ]] || die "--zone is required (or set CLOUDSDK_COMPUTE_ZONE)"
case "$ACTION" in
  all|create|setup|run|logs|stop|delete) ;;
  *) die "--action $ACTION unknown" ;;
esac
if [[ "$ACTION" == all || "$ACTION" == run ]]; then
  [[ "$WORKDIR" == gs://* ]] || die "--workdir must be gs://BUCKET/DIR (all workers write to it)"
fi
if [[ -z "$VERSION" ]]; then
  case "$ACCELERATOR" in
    v6e-*) VERSION="v2-alpha-tpuv6e" ;;
    v5p-*) VERSION="v2-alpha-tpuv5" ;;
    v5litepod-*|v5e-*) VERSION="v2-alpha-tpuv5-lite" ;;
    *) VERSION="tpu-ubuntu2204-base" ;;  # v4, v3
  esac
fi

GCLOUD=(gcloud compute tpus tpu-vm)
WHERE=(--zone "$ZONE")
[[ -n "$PROJECT" ]] && WHERE+=(--project "$PROJECT")

# Shell-quotes one word readably: plain words as they are, others in single quotes.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,~-]+$ ]]; then printf '%s' "$1"
  else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}

# Prints a command (copy-pastable) and runs it unless --dry-run.
run() {
  printf '+'; local a; for a in "$@"; do printf ' '; quote "$a"; done; printf '\n'
  [[ "$DRY_RUN" == 1 ]] || "$@"
}

ssh_all() { run "${GCLOUD[@]}" ssh "$NAME" "${WHERE[@]}" --worker=all --command "$1"; }

create_or_reuse() {
  if [[ "$DRY_RUN" == 0 ]] && "${GCLOUD[@]}" describe "$NAME" "${WHERE[@]}" \
      --format='value(state)' >/dev/null 2>&1; then
    echo "reusing TPU VM $NAME"
    run "${GCLOUD[@]}" describe "$NAME" "${WHERE[@]}" --format='value(state,acceleratorType)'
    return
  fi
  [[ "$DRY_RUN" == 1 ]] && echo "# (create only if describe fails: the slice does not exist)" &&
    run "${GCLOUD[@]}" describe "$NAME" "${WHERE[@]}" --format='value(state)'
  local args=("${GCLOUD[@]}" create "$NAME" "${WHERE[@]}" --accelerator-type "$ACCELERATOR"
              --version "$VERSION")
  [[ -n "$CAPACITY" ]] && args+=("$CAPACITY")
  run "${args[@]}"
}

VENV='$HOME/vlx-venv'
setup() {
  local fetch
  if [[ -n "$REPO" ]]; then
    fetch="rm -rf ~/vlx && git clone --depth 1 --branch $(quote "$REF") $(quote "$REPO") ~/vlx"
  else
    local here tarball
    here="$(cd "$(dirname "$0")/.." && pwd)"
    tarball="/tmp/vlx-${NAME}.tgz"
    run tar czf "$tarball" -C "$here" --exclude=.git --exclude='*.egg-info' \
        --exclude=__pycache__ .
    run "${GCLOUD[@]}" scp "$tarball" "$NAME:vlx.tgz" "${WHERE[@]}" --worker=all
    fetch="rm -rf ~/vlx && mkdir -p ~/vlx && tar xzf ~/vlx.tgz -C ~/vlx"
  fi
  # uv brings Python 3.11 (TPU images ship 3.10); jax[tpu] pulls the matching libtpu.
  ssh_all "set -e; $fetch; (command -v uv || curl -LsSf https://astral.sh/uv/install.sh | sh); \
export PATH=\$HOME/.local/bin:\$PATH; uv venv -p $PYTHON_VERSION --allow-existing $VENV; \
cd ~/vlx && VIRTUAL_ENV=$VENV uv pip install -c constraints.txt -e \".[tpu]\""
}

train_command() {
  local cmd="cd ~/vlx && $VENV/bin/python -m vlx.main --config $(quote "$CONFIG") \
--workdir $(quote "$WORKDIR") --mode $MODE --distributed"
  local a
  for a in "${EXTRA[@]+"${EXTRA[@]}"}"; do cmd+=" $(quote "$a")"; done
  echo "$cmd"
}

launch() {
  if [[ "$DETACH" == 1 ]]; then
    ssh_all "nohup bash -c $(quote "$(train_command)") > ~/vlx_run.log 2>&1 &"
    echo "detached: follow with $0 --name $NAME --zone $ZONE --action logs"
  else
    # Foreground on every worker; gcloud streams all workers' output (process 0 logs at INFO,
    # the others warnings only). Ctrl-C stops the local stream, not necessarily the workers.
    ssh_all "set -o pipefail; $(train_command) 2>&1 | tee ~/vlx_run.log"
  fi
}

logs() {
  run "${GCLOUD[@]}" ssh "$NAME" "${WHERE[@]}" --worker=0 --command "tail -n 200 -f ~/vlx_run.log"
}
stop() { run "${GCLOUD[@]}" stop "$NAME" "${WHERE[@]}"; }
delete() { run "${GCLOUD[@]}" delete "$NAME" "${WHERE[@]}" --quiet; }

case "$ACTION" in
  create) create_or_reuse ;;
  setup) setup ;;
  run) launch ;;
  logs) logs ;;
  stop) stop ;;
  delete) delete ;;
  all)
    create_or_reuse
    setup
    status=0
    launch || status=$?
    case "$AFTER" in stop) stop ;; delete) delete ;; esac
    exit "$status"
    ;;
esac
