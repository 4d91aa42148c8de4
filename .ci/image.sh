#!/usr/bin/env bash
# Build and test the container image (docs/operations.md, "Building and testing the image").
#   base          a Debian 12 base made from Debian's archive (mmdebstrap + import), kept
#   build         the image from ./Dockerfile (docker where present, else podman)
#   test          build, then inside the image: imports, `e2fgvi doctor --json`, the sample
#                 `dvc repro` as the image's user on a mounted copy of this checkout, ownership of
#                 what it wrote, `e2fgvi verify --workspace`; then compose-test on that copy
#   compose-test  compose.yaml's mlflow service + a training run of the train service logging to it
#   clean         remove what the test made (its files; containers and network go as it runs);
#                 the base and the image (its layers are the build cache) stay
#   pip-mounts F  the podman build options that give pip inside the build this machine's pip
#                 configuration (F: where to write the merged pip.conf)
# IMAGE_BASE=debian-archive builds on the base that `base` makes instead of the Dockerfile's
# pinned base (for machines that reach Debian's archive but no image registry).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-e2fgvi-repro:latest}
# Empty: the Dockerfile's pinned production base. `debian-archive`: the base `base` makes.
IMAGE_BASE=${IMAGE_BASE:-}
LOCAL_BASE=localhost/e2fgvi-base:bookworm
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { printf '[image %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

engine() {
    if [ -n "${ENGINE:-}" ]; then echo "$ENGINE"
    elif docker info > /dev/null 2>&1; then echo docker
    elif command -v podman > /dev/null; then echo podman
    else echo "image: neither a running Docker engine nor podman found; install one (apt-get install podman)" >&2; exit 2
    fi
}

cmd_base() {
    local eng; eng=$(engine)
    if "$eng" image exists "$LOCAL_BASE" 2> /dev/null || "$eng" image inspect "$LOCAL_BASE" > /dev/null 2>&1; then
        log "base $LOCAL_BASE present"; return
    fi
    command -v mmdebstrap > /dev/null || { echo "image base: mmdebstrap missing (apt-get install mmdebstrap)" >&2; exit 2; }
    local tmp; tmp=$(mktemp -d)
    log "making $LOCAL_BASE from $MIRROR ($SUITE, minbase)"
    # Like debian:bookworm-slim: minbase, no man pages, docs or locales beyond C.
    mmdebstrap --variant=minbase --quiet \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        "$SUITE" "$tmp/rootfs.tar" \
        "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" \
        "deb ${MIRROR%/debian}/debian-security $SUITE-security main"
    "$eng" import --quiet --change 'CMD ["bash"]' "$tmp/rootfs.tar" "$LOCAL_BASE" > /dev/null
    rm -rf "$tmp"
    log "base $LOCAL_BASE made"
}

# The host's pip configuration (`pip config list`: files and PIP_* variables) merged into one file
# whose local paths (wheel folders, file:// indexes, constraints, CA bundle) point under /run/host-pip,
# where they are mounted read-only into the RUN steps of a podman build (under their own prefix: a
# bundle mounted over /etc/ssl/certs would break the ca-certificates package). Prints the options.
pip_mounts() {
    local conf=$1 pip
    pip=$(command -v pip3 || command -v pip || true)
    [ -n "$pip" ] || return 0
    "$pip" config list 2> /dev/null | python3 -c '
import os, re, sys
settings, paths = {}, set()
def moved(key, token):
    scheme = "file://" if token.startswith("file://") else ""
    path = token.removeprefix(scheme)
    if not (path.startswith("/") and os.path.exists(path)):
        return token
    # A local index (.../simple) links its files relatively (../../files/x.whl): mount its parent.
    parent = os.path.dirname(path.rstrip("/"))
    paths.add(parent if key.endswith("index-url") and parent != "/" else path)
    return f"{scheme}/run/host-pip{path}"
for line in sys.stdin:
    match = re.fullmatch(r"(:env:|[\w-]+)\.([\w-]+)=(.*)", line.strip())
    if match and match.group(2) != "config-file":  # PIP_CONFIG_FILE: the files are merged here
        section, key, value = match.groups()
        value = " ".join(moved(key, t) for t in value.strip("\x27\"").split())
        # PIP_* variables override the files; pip reads them as [global].
        settings.setdefault("global" if section == ":env:" else section, {})[key] = value
with open(sys.argv[1], "w") as out:
    for section, values in settings.items():
        out.write(f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))
for path in sorted(paths):
    print(f"--volume={path}:/run/host-pip{path}:ro")
' "$conf"
    if [ -s "$conf" ]; then echo "--volume=$conf:/etc/pip.conf:ro"; fi
}

# Settings this kind of machine needs for podman (root, cgroups v1, Debian 12): the docker image
# format (OCI drops SHELL), runc (crun fails on hybrid cgroups), and ulimits within the host's
# hard limits (podman's defaults exceed what root without CAP_SYS_RESOURCE may set; its runtime
# runs with at most 32768 processes, so a higher nproc is refused too: measured with podman 4.3.1).
podman_opts() {
    local nproc; nproc=$(ulimit -Hu)
    if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then nproc=32768; fi
    echo --format=docker
    if [ "$(podman info --format '{{.Host.CgroupsVersion}}' 2> /dev/null)" = v1 ] && command -v runc > /dev/null; then
        echo --runtime=runc
    fi
    echo "--ulimit=nofile=$(ulimit -Hn):$(ulimit -Hn)"
    echo "--ulimit=nproc=$nproc:$nproc"
}

# The image user's ids: the caller's, so that files written into a mounted checkout are theirs;
# for root, the Dockerfile's default 1000 (the container never runs as root).
image_uid() { local u=${IMAGE_UID:-$(id -u)}; [ "$u" = 0 ] && u=1000; echo "$u"; }
image_gid() { local g=${IMAGE_GID:-$(id -g)}; [ "$g" = 0 ] && g=1000; echo "$g"; }

base_ref() {
    case "$IMAGE_BASE" in
        "") ;;
        debian-archive) cmd_base; echo "$LOCAL_BASE" ;;
        *) echo "$IMAGE_BASE" ;;
    esac
}

cmd_build() {
    local eng base opts=() tmp
    eng=$(engine); base=$(base_ref)
    opts+=(--build-arg "UID=$(image_uid)" --build-arg "GID=$(image_gid)")
    [ -n "$base" ] && opts+=(--build-arg "BASE=$base")
    if [ "$eng" = podman ]; then
        tmp=$(mktemp -d)
        mapfile -t -O "${#opts[@]}" opts < <(podman_opts; pip_mounts "$tmp/pip.conf")
    fi
    log "$eng build -t $IMAGE ${opts[*]} ."
    local rc=0
    "$eng" build -t "$IMAGE" "${opts[@]}" . || rc=$?
    if [ -n "${tmp:-}" ]; then rm -rf "$tmp"; fi
    # Earlier builds' layers that nothing uses any more (a replaced code or pip layer).
    if [ "$rc" = 0 ]; then "$eng" image prune --force > /dev/null; fi
    return "$rc"
}

# Options for every `run` of the image: podman's ulimit and runtime settings (as for the build)
# and, for rootless podman, the caller's uid inside the container (else files written into the
# mount belong to a sub-uid).
run_opts() {
    [ "$(engine)" = podman ] || return 0
    podman_opts | grep -v -- --format
    if [ "$(id -u)" != 0 ]; then echo --userns=keep-id; fi
}

# Peak disk use of the file system holding the engine's storage, sampled every 2 s into $1.
disk_sampler() {
    local out=$1 root
    root=$(podman info --format '{{.Store.GraphRoot}}' 2> /dev/null || echo /var/lib/docker)
    while :; do df --output=used -B1 "$(dirname "$root")" | tail -1 >> "$out"; sleep 2; done
}

# A copy of this checkout as a user would have it: a clone of HEAD plus the working tree's
# uncommitted changes, owned by the image's user (the host user, or 1000 when root calls).
checkout_copy() {
    local dest=$1
    git clone --quiet --no-hardlinks . "$dest"
    git diff HEAD --binary | git -C "$dest" apply --allow-empty
    git ls-files --others --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$dest"
    if [ "$(id -u)" = 0 ]; then chown -R "$(image_uid):$(image_gid)" "$dest"; fi
}

# Run a command in the image on the mounted checkout, mounted as the README says.
in_image() {
    local ck=$1; shift
    local opts; mapfile -t opts < <(run_opts)
    "$(engine)" run --rm --ipc=host "${opts[@]}" -v "$ck":/workspace -v "$ck/data":/workspace/data \
        -v "$ck/mlruns":/workspace/mlruns "$IMAGE" "$@"
}

step() { # step NAME COMMAND...: run, time, and record one step of the test
    local name=$1 t0=$SECONDS; shift
    log "$name ..."
    if ! "$@"; then log "FAILED: $name"; return 1; fi
    TIMES+=("$(printf '%-28s %5d s' "$name" $((SECONDS - t0)))")
}

check_doctor() {
    local opts; mapfile -t opts < <(run_opts)
    "$(engine)" run --rm "${opts[@]}" "$IMAGE" e2fgvi doctor --json > "$WORK/doctor.json"
    python3 - "$WORK/doctor.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
failed = [c for c in report["checks"] if c["status"] == "fail"]
for c in report["checks"]:
    print(f"  {c['status']:<4} {c['name']}: {c['detail']}")
sys.exit(f"doctor: {len(failed)} failed check(s)" if failed or report["exit_code"] else 0)
PY
}

check_imports() {
    local opts; mapfile -t opts < <(run_opts)
    "$(engine)" run --rm "${opts[@]}" "$IMAGE" python -c \
        'import dvc, mlflow, torch, torchvision, e2fgvi.cli; print("torch", torch.__version__, "CUDA build", torch.version.cuda)'
}

check_owner() { # every file in the mounted checkout belongs to the image's (host) user
    local wrong
    wrong=$(find "$1" \( ! -uid "$(image_uid)" -o ! -gid "$(image_gid)" \) -printf '%u:%g %p\n' | head -5)
    if [ -n "$wrong" ]; then echo "files in the mount not owned by $(image_uid):$(image_gid):"; echo "$wrong"; return 1; fi
    echo "all $(find "$1" | wc -l) files in the mount belong to $(image_uid):$(image_gid)"
}

image_size() { "$(engine)" image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.2f GB", $1 / 1e9}'; }

cmd_test() {
    WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/e2fgvi-image-test.XXXXXX"); TIMES=()
    local ck=$WORK/checkout start
    start=$(df --output=used -B1 "$WORK" | tail -1)
    # Global: the EXIT trap runs after this function's locals are gone.
    disk_sampler "$WORK/disk" & SAMPLER=$!
    trap 'kill "$SAMPLER" 2> /dev/null || true; cmd_clean' EXIT
    step "build" cmd_build
    step "imports" check_imports
    step "doctor --json" check_doctor
    checkout_copy "$ck"
    step "dvc repro (sample)" in_image "$ck"
    step "files belong to the user" check_owner "$ck"
    step "verify --workspace" in_image "$ck" e2fgvi verify --workspace
    step "compose test" compose_test "$ck"
    kill "$SAMPLER"
    log "image $IMAGE: $(image_size); peak disk above the start: $(sort -n "$WORK/disk" | tail -1 | awk -v s="$start" '{printf "%.1f GB", ($1 - s) / 1e9}')"
    printf '%s\n' "${TIMES[@]}" >&2
    log "image test passed"
}

# The compose tool as the array COMPOSE: docker compose, or podman-compose with podman's run options.
compose_cmd() {
    if [ "$(engine)" = docker ]; then COMPOSE=(docker compose); return; fi
    command -v podman-compose > /dev/null || { echo "image: podman-compose missing (apt-get install podman-compose)" >&2; exit 2; }
    COMPOSE=(podman-compose -p e2fgvi-imagetest "--podman-run-args=$(run_opts | tr '\n' ' ')")
}

# compose.yaml in the checkout $1 (where the sample pipeline has run): the mlflow service up and
# healthy, the train service's training (the train stage, forced) logging over HTTP into it, and
# the run found on the server afterwards.
compose_test() {
    local ck=$1 port COMPOSE
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    compose_cmd
    (
        cd "$ck"
        export E2FGVI_UI_PORT=$port E2FGVI_UID=$(image_uid) E2FGVI_GID=$(image_gid)
        # podman-compose 1.0.3's `down` leaves the project's network behind.
        trap '"${COMPOSE[@]}" down > /dev/null 2>&1 || true
              if [ "$(engine)" = podman ]; then podman network rm --force e2fgvi-imagetest_default > /dev/null 2>&1 || true; fi' EXIT
        "${COMPOSE[@]}" up -d --no-build mlflow > /dev/null
        for _ in $(seq 150); do  # MLflow took 100 s to start at load 27
            if curl -fsS "http://127.0.0.1:$port/health" > /dev/null 2>&1; then break; fi
            sleep 2
        done
        curl -fsS "http://127.0.0.1:$port/health" > /dev/null
        "${COMPOSE[@]}" run --rm -T train dvc repro --force --single-item train
        # Asked while the server still runs (the trap takes it down).
        python3 - data/run/mlflow_run.json "$port" <<'PY'
import json, sys, urllib.request
record = json.load(open(sys.argv[1]))
assert record["uri"] == "http://mlflow:5000", f"run logged to {record['uri']}, not the server"
assert not record["spool"], f"run left a spool (server unreachable?): {record['spool']}"
url = f"http://127.0.0.1:{sys.argv[2]}/api/2.0/mlflow/runs/get?run_id={record['run_id']}"
run = json.load(urllib.request.urlopen(url, timeout=30))["run"]
metrics = run["data"].get("metrics", [])
assert run["info"]["status"] == "FINISHED" and metrics, run["info"]
print(f"run {record['run_id']} on the server: {run['info']['status']}, {len(metrics)} metrics")
PY
    )
}

# The image stays: its layers are the cache of the next build (the pip layer alone ~7 GB, so a
# rebuild after a code change takes seconds). `podman rmi` would also delete the untagged parent
# images that hold those layers. What goes: the test's files, containers, network and volumes.
cmd_clean() {
    if [ -n "${WORK:-}" ] && [ -d "$WORK" ]; then rm -rf "$WORK"; fi
    log "removed the test's files (the base and the image, whose layers are the cache, stay)"
}

case "${1:-}" in
    base) cmd_base ;;
    build) cmd_build ;;
    test) cmd_test ;;
    compose-test) compose_test "${2:?usage: $0 compose-test CHECKOUT}" ;;
    clean) cmd_clean ;;
    pip-mounts) pip_mounts "${2:?usage: $0 pip-mounts MERGED_CONF}" ;;
    *) echo "usage: $0 base|build|test|compose-test CHECKOUT|clean|pip-mounts CONF" >&2; exit 2 ;;
esac
