#!/usr/bin/env bash
# A real S3-compatible server for tests and benchmarks: Ceph's RADOS Gateway (Debian's
# packages) as a single-node cluster on loopback — one monitor, one OSD on the in-memory
# object store (memstore), one radosgw with the beast frontend on 127.0.0.1.
#
#   scripts/s3-server.sh start    start it (idempotent; installs the Debian packages when
#                                 missing) and print `export PANREDUCE_S3_...` lines:
#                                 eval "$(scripts/s3-server.sh start)"
#   scripts/s3-server.sh env      print the export lines only
#   scripts/s3-server.sh status   exit 0 when it is running and answering S3 requests
#   scripts/s3-server.sh stop     stop the daemons (by their PID files); data is in memory
#
# Settings (environment): PANREDUCE_S3_PORT (7480), PANREDUCE_S3_MON_PORT (3300),
# PANREDUCE_S3_DATA (<repo>/.cache/s3, git-ignored), PANREDUCE_S3_MEMORY_MIB (2048: the
# memstore cap), PANREDUCE_S3_TEST_BUCKETS ("panreduce panreduce-other": made at start),
# PANREDUCE_S3_START_TIMEOUT (120 s).
# Every start after a stop is a fresh, empty cluster: the objects live in the OSD's RAM.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${PANREDUCE_S3_PORT:-7480}"
MON_PORT="${PANREDUCE_S3_MON_PORT:-3300}"
DATA="${PANREDUCE_S3_DATA:-$REPO/.cache/s3}"
MEMORY_MIB="${PANREDUCE_S3_MEMORY_MIB:-2048}"
BUCKETS="${PANREDUCE_S3_TEST_BUCKETS:-panreduce panreduce-other}"
TIMEOUT="${PANREDUCE_S3_START_TIMEOUT:-120}"
ACCESS_KEY="panreduce-test"
SECRET_KEY="panreduce-test-secret-not-for-production"
REGION="us-east-1"
CONF="$DATA/ceph.conf"
ENDPOINT="http://127.0.0.1:$PORT"
PACKAGES=(ceph-mon ceph-osd radosgw ceph-common)
DAEMONS=(mon osd rgw)
EMPTY_SHA256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855

log() { echo "s3-server: $*" >&2; }
die() { log "$*"; exit 1; }

print_env() {
    cat <<EOF
export PANREDUCE_S3_ENDPOINT=$ENDPOINT
export PANREDUCE_S3_ACCESS_KEY_ID=$ACCESS_KEY
export PANREDUCE_S3_SECRET_ACCESS_KEY=$SECRET_KEY
export PANREDUCE_S3_REGION=$REGION
export PANREDUCE_S3_ALLOW_HTTP=true
export PANREDUCE_S3_TEST_BUCKETS="$BUCKETS"
EOF
}

pid_of() { [[ -f "$DATA/pids/$1.pid" ]] && cat "$DATA/pids/$1.pid" || true; }
alive() { local p; p="$(pid_of "$1")"; [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; }
answering() { [[ "$(curl -s -o /dev/null -m 3 -w '%{http_code}' "$ENDPOINT/" || true)" == 200 ]]; }

is_running() {
    local d
    for d in "${DAEMONS[@]}"; do alive "$d" || return 1; done
    answering
}

stop() {  # TERM all three, KILL what is left after 1 s (the cluster lives in memory: nothing to save)
    local d p i pids=()
    for d in rgw osd mon; do
        p="$(pid_of "$d")"
        if [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; then kill "$p" 2>/dev/null && pids+=("$p"); fi
    done
    for i in $(seq 10); do
        local left=()
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && left+=("$p"); done
        pids=("${left[@]}")
        [[ ${#pids[@]} -eq 0 ]] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for i in $(seq 30); do  # until they are gone (ports free)
        local left=()
        for p in "${pids[@]}"; do [[ -d "/proc/$p" && "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ]] && left+=("$p"); done
        pids=("${left[@]}")
        [[ ${#pids[@]} -eq 0 ]] && break
        sleep 0.1
    done
    rm -f "$DATA"/pids/*.pid
}

install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}" curl; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    local sudo=()
    [[ "$(id -u)" -eq 0 ]] || sudo=(sudo -n)
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]} (Debian packages, about 270 MB, ~35 s)"
    "${sudo[@]}" apt-get update -qq >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
}

wait_for() {  # wait_for WHAT DAEMON COMMAND...: poll COMMAND until it succeeds
    local what="$1" daemon="$2"; shift 2
    local deadline=$((SECONDS + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if [[ -n "$daemon" ]] && ! alive "$daemon"; then
            tail -n 20 "$DATA/log/$daemon.out" >&2 || true
            die "$daemon exited while waiting for $what (logs in $DATA/log)"
        fi
        (( SECONDS < deadline )) || die "timed out after ${TIMEOUT}s waiting for $what (logs in $DATA/log)"
        sleep 0.2
    done
}

spawn() {  # spawn NAME COMMAND...: run a daemon in the foreground, in our background
    local name="$1"; shift
    setsid "$@" >"$DATA/log/$name.out" 2>&1 < /dev/null &
    echo $! > "$DATA/pids/$name.pid"
}

osd_up() { ceph -c "$CONF" osd dump 2>/dev/null | grep -q '^osd.0 up'; }
make_bucket() {
    local code
    code="$(curl -s -o /dev/null -w '%{http_code}' -X PUT \
        -H "x-amz-content-sha256: $EMPTY_SHA256" --aws-sigv4 "aws:amz:$REGION:s3" \
        --user "$ACCESS_KEY:$SECRET_KEY" "$ENDPOINT/$1")"
    [[ "$code" == 200 || "$code" == 409 ]] || die "creating bucket $1 failed (HTTP $code)"
}

start() {
    if is_running; then print_env; return 0; fi
    install_packages
    stop
    local t0=$SECONDS
    rm -rf "$DATA"
    mkdir -p "$DATA"/{pids,log,run,mon,osd/ceph-0,rgw}
    local run="$DATA/run"
    (( ${#run} < 70 )) || { run="/tmp/panreduce-s3-$(id -u)-$PORT"; rm -rf "$run"; mkdir -p "$run"; }
    local fsid; fsid="$(cat /proc/sys/kernel/random/uuid)"
    cat > "$CONF" <<EOF
[global]
fsid = $fsid
mon initial members = a
mon host = v2:127.0.0.1:$MON_PORT
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
ms client mode = crc
ms mon client mode = crc
ms cluster mode = crc
ms service mode = crc
ms mon cluster mode = crc
ms mon service mode = crc
osd objectstore = memstore
memstore device bytes = $((MEMORY_MIB * 1024 * 1024))
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
paxos propose interval = 0.05
paxos min wait = 0.01
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
mon allow pool size one = true
mon allow pool delete = true
osd crush chooseleaf type = 0
mon data avail warn = 1
mon data avail crit = 0
mon warn on pool no redundancy = false
run dir = $run
admin socket = $run/\$cluster-\$name.asok
log file = $DATA/log/\$cluster-\$name.log
log to stderr = false
err to stderr = true
mon data = $DATA/mon/\$cluster-\$id
osd data = $DATA/osd/\$cluster-\$id
keyring = $DATA/keyring
osd memory target = 939524096

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$PORT
rgw data = $DATA/rgw
rgw dns name = 127.0.0.1
rgw enable usage log = false
rgw thread pool size = 64
EOF
    touch "$DATA/keyring"
    monmaptool --create --addv a "[v2:127.0.0.1:$MON_PORT]" --fsid "$fsid" "$DATA/monmap" >/dev/null
    ceph-mon -c "$CONF" --mkfs -i a --monmap "$DATA/monmap" >/dev/null 2>"$DATA/log/mon-mkfs.out" \
        || { cat "$DATA/log/mon-mkfs.out" >&2; die "ceph-mon --mkfs failed"; }
    spawn mon ceph-mon -c "$CONF" -f -i a
    wait_for "the monitor" mon ceph -c "$CONF" --connect-timeout 5 mon stat

    local osd_uuid; osd_uuid="$(cat /proc/sys/kernel/random/uuid)"
    local id; id="$(ceph -c "$CONF" osd new "$osd_uuid")"
    [[ "$id" == 0 ]] || die "expected osd id 0, got $id"
    ceph-osd -c "$CONF" --mkfs -i 0 --osd-uuid "$osd_uuid" >/dev/null 2>"$DATA/log/osd-mkfs.out" \
        || { cat "$DATA/log/osd-mkfs.out" >&2; die "ceph-osd --mkfs failed"; }
    spawn osd ceph-osd -c "$CONF" -f -i 0
    wait_for "the OSD to come up" osd osd_up

    spawn rgw radosgw -c "$CONF" -f -n client.rgw.a
    wait_for "the RADOS Gateway on $ENDPOINT" rgw answering
    radosgw-admin -c "$CONF" user create --uid=panreduce --display-name="PaNReduce tests" \
        --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >/dev/null 2>"$DATA/log/user.out" \
        || { cat "$DATA/log/user.out" >&2; die "radosgw-admin user create failed"; }
    local b
    for b in $BUCKETS; do make_bucket "$b"; done
    log "started in $((SECONDS - t0)) s: S3 on $ENDPOINT (data in $DATA)"
    print_env
}

case "${1:-}" in
    start) start ;;
    stop) stop; log "stopped" ;;
    env) print_env ;;
    status)
        if is_running; then
            log "running: S3 on $ENDPOINT (pids: mon $(pid_of mon), osd $(pid_of osd), rgw $(pid_of rgw))"
        else
            log "not running"; exit 1
        fi ;;
    *) echo "usage: $0 start|stop|env|status" >&2; exit 2 ;;
esac
