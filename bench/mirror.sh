#!/usr/bin/env bash
# bench/mirror.sh [WORKLOAD...] — node → hub mirror figures (release build), default: small big.
# Workloads from /work/shared/bench/workload.sh (small, linux, big). For each workload:
#   W.mirror_initial     node start → `mirror status` shows pending 0 and every file (loopback TLS)
#   W.rsync_initial      rsync -a between two local dirs, same data, same run
#   W.hub_restart        hub restart (same ports): from the restarted hub being ready (its
#                        "hub ready" log line) to the node online again and its mirror in sync
#                        (includes the node's reconnect backoff; the detail shows the part after
#                        the node was seen online again)
#   W.rehash             b3sum of every file of the tree (what a hub without an index would redo)
#   W.hub_rehashed_bytes ganglion_mirror_hashed_bytes_total of the restarted hub (must be 0)
#   W.node_rescan_hashed files the restarted node hashed (debug log `workspace scanned … hashed=N`)
#   W.node_restart_uploaded  bytes the hub hashed because of the node restart (must be 0)
# and once (on a copy of `small`): edit_visible (append to kernel/fork.c → mirror file equal), p50 of ≥10;
#   put_visible / put_visible_p99: `ganglion mirror put` of a new file → in the node's workspace (PUTS, default 50).
# and once when `big` is measured: big.resume_sent_pct (the node killed once the hub's partial
# of big.bin holds 50 %, then started again: the bytes the hub received from the cut on, as % of
# the file — what finishing it cost; goal <= 55; from ganglion_mirror_received_bytes_total; the
# detail gives where it was cut, what resumed, and both attempts together).
# Every timed run: settle_trash before, warm page cache, nothing deleted while measuring.
# Env: RUNS (default 3), EDITS (default 10), PUTS (default 50), VISIBLE_ONLY=1, GANGLION_BIN; INITIAL_ONLY=1 measures only the
# initial syncs (no restarts, rehash or edits: quicker iterations); RESTART_ONLY=1 (for iterating on the
# hub restart): one untimed initial sync, no rsync, no node restart, no edit figure;
# RESUME_ONLY=1 measures only big.resume_sent_pct;
# Sync is awaited with `ganglion mirror wait` (WAIT_POLL=1: a status poll every 20 ms).
# The online checks match the CLI's JSON in bash (default) instead of piping it
# through jq (jq 1.6 costs ~17 ms CPU per call, three calls per check: most of a
# sub-100 ms figure on 2 cores); FAST_POLL= (empty) checks with jq instead.
# Same conditions either way, less measurement overhead by default.
set -euo pipefail
# Scratch space of its own (other benchmarks share /tmp/ganglion-bench); workloads from the shared place.
export BENCH_ROOT=${BENCH_ROOT:-/tmp/ganglion-bench-mirror}
export GANGLION_BENCH_DIR=${GANGLION_BENCH_DIR:-/tmp/ganglion-bench/work}
. /work/shared/bench/lib.sh
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${GANGLION_BIN:-$REPO/target/release/ganglion}
[ -x "$BIN" ] || die "build first: cargo build --release -p ganglion"
command -v rsync >/dev/null || die "rsync missing (apt-get install rsync)"
command -v b3sum >/dev/null || die "b3sum missing (apt-get install b3sum or cargo install b3sum)"
RUNS=${RUNS:-3}; EDITS=${EDITS:-10}; RESTART_ONLY=${RESTART_ONLY:-}; FAST_POLL=${FAST_POLL-1}
S=$ROOT/mirror; mkdir -p "$S"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM
now() { date +%s.%N; }
g() { "$BIN" "$@"; }

# start_hub DATA [GRPC HTTP] → HUB_PID; waits for a fresh endpoints.json.
# The hub's log (warn, plus its "hub ready" line) goes to $HUB_LOG.
HUB_LOG=$LOGDIR/mirror-hub.log
start_hub() {
  rm -f "$1/run/endpoints.json"
  GANGLION_LOG=warn,ganglion_hub::hub=info "$BIN" hub --data-dir "$1" --grpc-addr "${2:-127.0.0.1:0}" --http-addr "${3:-127.0.0.1:0}" \
    >"$HUB_LOG" 2>&1 & HUB_PID=$!; PIDS+=("$HUB_PID")
  for _ in $(seq 1000); do [ -s "$1/run/endpoints.json" ] && return 0; sleep 0.01; done; die "hub did not start"
}
# hub_ready_at: epoch seconds of the "hub ready" line of the current hub log
hub_ready_at() {
  local ts; ts=$(grep -m1 "hub ready" "$HUB_LOG" | cut -d' ' -f1)
  [ -n "$ts" ] || die "no 'hub ready' line in $HUB_LOG"
  date -d "$ts" +%s.%N
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
metric() { # metric DATA NAME
  curl -s -H "Authorization: Bearer $(cat "$1/admin.token")" "http://$(jq -r .http "$1/run/endpoints.json")/metrics" \
    | awk -v n="$2" '$1==n {print $2}'
}
# in_sync DATA FILES: node online, nothing pending, every file mirrored
in_sync() {
  if [ -n "$FAST_POLL" ]; then
    local st; st=$(g mirror status n1 --json --data-dir "$1" 2>/dev/null | tr -d ' \n') || return 1
    [[ $st =~ \"pending\":0[,}] && $st =~ \"in_flight\":0[,}] && $st =~ \"files\":$2[,}] ]] || return 1
    node_online "$1"; return
  fi
  g mirror status n1 --json --data-dir "$1" 2>/dev/null | jq -e --argjson f "$2" '.pending==0 and .in_flight==0 and .files==$f' >/dev/null || return 1
  g nodes ls --json --data-dir "$1" 2>/dev/null | jq -e '.[] | select(.name=="n1") | .status=="online"' >/dev/null
}
# Poll loops count in bash: `for _ in $(seq 100000)` costs ~20 ms to expand,
# inside the timed window (twice per restart figure).
# wait_sync DATA FILES: `ganglion mirror wait` (one request the hub holds until
# the node is online and in sync with FILES files; it looks every 5 ms inside
# the hub). Polling with a CLI process every 20 ms took ~20 % of a core on this
# 2-core machine from the hub and node being measured. WAIT_POLL=1 polls
# instead (in_sync every 20 ms), as bench results before 2026-11-21 10:00 did.
wait_sync() {
  if [ -z "${WAIT_POLL:-}" ]; then
    # Until the node has joined, the hub does not know n1 (an error at once).
    local err
    for ((_i = 0; _i < 5000; _i++)); do
      err=$(g mirror wait n1 --files "$2" --timeout 900 --data-dir "$1" 2>&1 >/dev/null) && return 0
      [[ $err == *"not found"* ]] || die "no sync: $err"
      sleep 0.02
    done
    die "no sync: $err"
  fi
  for ((_i = 0; _i < 100000; _i++)); do in_sync "$1" "$2" && return 0; sleep 0.02; done; die "no sync"
}
node_online() {
  if [ -n "$FAST_POLL" ]; then # one node (n1): its object's "status" field
    local ls; ls=$(g nodes ls --json --data-dir "$1" 2>/dev/null | tr -d ' \n') || return 1
    [[ $ls =~ \"name\":\"n1\"[^{}]*\"status\":\"online\" ]]; return
  fi
  g nodes ls --json --data-dir "$1" 2>/dev/null | jq -e '.[] | select(.name=="n1") | .status=="online"' >/dev/null
}

# fresh MP: a brand-new filesystem mounted at MP (printed); unfresh MP: gone.
fresh() { bash /work/shared/bench/freshfs.sh "$1" "${FRESH_SIZE:-8G}" >/dev/null; echo "$1"; }
unfresh() { bash /work/shared/bench/freshfs.sh --umount "$1"; }
# clear_run R: removes a run's data (a fresh filesystem, or a directory).
clear_run() { if mountpoint -q "$1"; then unfresh "$1"; else eval "$(trash_cmd "$1")"; fi; }
# rss_mib PID: resident set in MiB (one decimal).
rss_mib() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
# resume_figure: big.resume_sent_pct (see the header).
resume_figure() {
  need_workload big
  local src=$WORK/big r=$S/resume size half held first total resumed cut
  size=$(stat -c %s "$src/big.bin"); half=$((size / 2))
  settle_trash; eval "$(trash_cmd "$r")"; mkdir -p "$r"; sync
  start_hub "$r/hub"; INV=$(g invite create --name n1 --data-dir "$r/hub")
  eval "$(warm_cmd "$src")"
  GANGLION_LOG=warn "$BIN" node join "$INV" --workspace "$src" --state-dir "$r/state" --name n1 >>"$LOGDIR/mirror-node.log" 2>&1 &
  NODE_PID=$!; PIDS+=("$NODE_PID")
  # Kill the node as soon as the hub's partial holds half of the file.
  for ((_i = 0; _i < 200000; _i++)); do
    held=$(stat -c %s "$r/hub/staging/n1/partial/"*.part 2>/dev/null | head -1 || true); held=${held:-0}
    [ "$held" -ge "$half" ] && break; sleep 0.002
  done
  [ "$held" -ge "$half" ] || die "the upload of big.bin never reached 50 %"
  kill -9 "$NODE_PID"; wait "$NODE_PID" 2>/dev/null || true
  # The hub has written what it received once its count stops moving.
  first=-1
  for ((_i = 0; _i < 1000; _i++)); do
    cut=$(metric "$r/hub" ganglion_mirror_received_bytes_total); [ "$cut" = "$first" ] && break
    first=$cut; sleep 0.2
  done
  GANGLION_LOG=warn "$BIN" node start --state-dir "$r/state" >>"$LOGDIR/mirror-node.log" 2>&1 & NODE_PID=$!; PIDS+=("$NODE_PID")
  wait_sync "$r/hub" 1
  cmp -s "$src/big.bin" "$r/hub/mirrors/n1/big.bin" || die "big.bin differs after the resume"
  total=$(metric "$r/hub" ganglion_mirror_received_bytes_total)
  resumed=$(metric "$r/hub" ganglion_mirror_resumed_bytes_total)
  pct() { awk -v v="${1:-0}" -v s="$size" 'BEGIN{printf "%.1f", v*100/s}'; }
  emit "big.resume_sent_pct" "$(pct "$(awk -v t="$total" -v f="$first" 'BEGIN{print t-f}')")" % \
    "goal <= 55; cut at $(pct "$first") %, resumed $(pct "$resumed") %, both attempts $(pct "$total") % (150 without a resume)"
  stop "$NODE_PID"; stop "$HUB_PID"; eval "$(trash_cmd "$r")"
}
if [ "${RESUME_ONLY:-0}" = 1 ]; then resume_figure; exit 0; fi

WORKLOADS=("$@"); [ ${#WORKLOADS[@]} -gt 0 ] || WORKLOADS=(small big)
# VISIBLE_ONLY=1: only the edit_visible and put_visible figures.
[ "${VISIBLE_ONLY:-0}" = 1 ] && WORKLOADS=()
for W in "${WORKLOADS[@]}"; do
  need_workload "$W"
  # The node keeps its replica marker in the workspace's .ganglion (never mirrored).
  SRC=$WORK/$W; N=$(find "$SRC" -path "$SRC/.ganglion" -prune -o -type f -print | wc -l)
  note "$W: $N files"
  mi=(); rs=()
  for i in $(seq "$([ -n "$RESTART_ONLY" ] && echo 1 || echo "$RUNS")"); do
    # rsync -a, local to local
    # With FRESHFS=1 (default) each side writes into a brand-new filesystem
    # (../shared/bench/freshfs.sh) and its time includes a `sync` of it:
    # neither pays for the shared /tmp's slow file creation after deletes.
    if [ -n "$RESTART_ONLY" ]; then rs+=(0); else
    if [ "${FRESHFS:-1}" = 1 ]; then D=$(fresh "$S/fresh-rsync")/out; else
      settle_trash; D=$S/$W-rsync; eval "$(trash_cmd "$D")"; fi
    sync; eval "$(warm_cmd "$SRC")"
    t0=$(now); rsync -a "$SRC/" "$D/"; sync -f "$D"; t1=$(now); rs+=("$(fsub "$t1" "$t0")")
    if [ "${FRESHFS:-1}" = 1 ]; then unfresh "$S/fresh-rsync"; else eval "$(trash_cmd "$D")"; fi; fi
    # ganglion: fresh hub, node joins with the workload as its workspace
    if [ "${FRESHFS:-1}" = 1 ]; then R=$(fresh "$S/fresh-run"); else
      settle_trash; R=$S/$W-run; eval "$(trash_cmd "$R")"; mkdir -p "$R"; fi
    sync
    start_hub "$R/hub"; INV=$(g invite create --name n1 --data-dir "$R/hub")
    eval "$(warm_cmd "$SRC")"
    t0=$(now)
    GANGLION_LOG=warn "$BIN" node join "$INV" --workspace "$SRC" --state-dir "$R/state" --name n1 >>"$LOGDIR/mirror-node.log" 2>&1 &
    NODE_PID=$!; PIDS+=("$NODE_PID")
    wait_sync "$R/hub" "$N"; sync -f "$R/hub"; t1=$(now); mi+=("$(fsub "$t1" "$t0")")
    note "$W run $i: rsync ${rs[-1]} s, mirror ${mi[-1]} s"
    if [ "$i" -lt "$RUNS" ] && [ -z "$RESTART_ONLY" ]; then stop "$NODE_PID"; stop "$HUB_PID"; clear_run "$R"; fi
  done
  # Memory once the sync has settled: resident set of the hub and the node.
  sleep "${SETTLE_S:-5}"
  emit "$W.hub_rss" "$(rss_mib "$HUB_PID")" MiB "VmRSS ${SETTLE_S:-5} s after the sync; goal <= 64"
  emit "$W.node_rss" "$(rss_mib "$NODE_PID")" MiB "VmRSS ${SETTLE_S:-5} s after the sync; goal <= 64"
  emit_stats "$W.mirror_initial" s "${mi[@]}"
  [ -n "$RESTART_ONLY" ] || emit_stats "$W.rsync_initial" s "${rs[@]}"
  [ -n "$RESTART_ONLY" ] || emit "$W.mirror_vs_rsync" "$(awk -v a="$(stats "${mi[@]}" | cut -d' ' -f1)" -v b="$(stats "${rs[@]}" | cut -d' ' -f1)" 'BEGIN{printf "%.2f", a/b}')" x "goal <= 1.0"
  if [ "${INITIAL_ONLY:-0}" = 1 ]; then stop "$NODE_PID"; stop "$HUB_PID"; clear_run "$R"; continue; fi

  # Hub restart with the workload mirrored (the last run's hub and node are still up).
  GRPC=$(jq -r .grpc "$R/hub/run/endpoints.json"); HTTP=$(jq -r .http "$R/hub/run/endpoints.json")
  before=$(metric "$R/hub" ganglion_mirror_hashed_bytes_total)
  hr=(); ho=(); after=()
  for i in $(seq "$RUNS"); do
    stop "$HUB_PID"; start_hub "$R/hub" "$GRPC" "$HTTP"
    for ((_i = 0; _i < 100000; _i++)); do node_online "$R/hub" && break; sleep 0.01; done; t_on=$(now)
    wait_sync "$R/hub" "$N"; t1=$(now); t0=$(hub_ready_at)
    hr+=("$(fsub "$t1" "$t0")"); ho+=("$(fsub "$t1" "$t_on")")
    after+=("$(metric "$R/hub" ganglion_mirror_hashed_bytes_total)")
  done
  emit_stats "$W.hub_restart" s "${hr[@]}"
  emit_stats "$W.hub_restart_after_online" s "${ho[@]}"
  emit "$W.hub_rehashed_bytes" "$(printf '%s\n' "${after[@]}" | sort -g | tail -1)" B "max over restarts; before restart the hub had hashed $before"
  rh=()
  for i in $(seq "$RUNS"); do
    eval "$(warm_cmd "$SRC")"; t0=$(now); find "$SRC" -type f -print0 | xargs -0r b3sum >/dev/null; t1=$(now); rh+=("$(fsub "$t1" "$t0")")
  done
  emit_stats "$W.rehash" s "${rh[@]}"
  emit "$W.restart_speedup" "$(awk -v a="$(stats "${rh[@]}" | cut -d' ' -f1)" -v b="$(stats "${hr[@]}" | cut -d' ' -f1)" 'BEGIN{printf "%.1f", a/b}')" x "rehash / hub_restart, goal >= 20"
  emit "$W.restart_speedup_after_online" "$(awk -v a="$(stats "${rh[@]}" | cut -d' ' -f1)" -v b="$(stats "${ho[@]}" | cut -d' ' -f1)" 'BEGIN{printf "%.1f", a/b}')" x "rehash / hub_restart_after_online"
  if [ -n "$RESTART_ONLY" ]; then stop "$NODE_PID"; stop "$HUB_PID"; clear_run "$R"; continue; fi

  # Node restart, nothing changed: stat-only scan.
  base=$(metric "$R/hub" ganglion_mirror_hashed_bytes_total)
  stop "$NODE_PID"; NL=$LOGDIR/mirror-node-restart-$W.log; : >"$NL"
  t0=$(now)
  GANGLION_LOG=warn,ganglion_node=debug "$BIN" node start --state-dir "$R/state" >"$NL" 2>&1 & NODE_PID=$!; PIDS+=("$NODE_PID")
  for ((_i = 0; _i < 100000; _i++)); do grep -q "workspace scanned" "$NL" && break; sleep 0.01; done; t1=$(now)
  wait_sync "$R/hub" "$N"
  line=$(grep -m1 "workspace scanned" "$NL")
  hashed=$(sed -n 's/.*hashed=\([0-9]*\).*/\1/p' <<<"$line")
  emit "$W.node_rescan_hashed" "$hashed" files "node log: ${line##*: } (scan done $(fsub "$t1" "$t0") s after start)"
  emit "$W.node_restart_uploaded" "$(awk -v a="$(metric "$R/hub" ganglion_mirror_hashed_bytes_total)" -v b="$base" 'BEGIN{print a-b}')" B "hub hashed bytes across the node restart"
  stop "$NODE_PID"; stop "$HUB_PID"; clear_run "$R"
done

[ "${INITIAL_ONLY:-0}" = 1 ] && exit 0
[[ " ${WORKLOADS[*]} " == *" big "* ]] && [ -z "$RESTART_ONLY" ] && resume_figure
# One edit → visible in the mirror (a copy of `small`, so the pristine workload is untouched).
[ -z "$RESTART_ONLY" ] || exit 0
need_workload small
settle_trash; E=$S/edit; eval "$(trash_cmd "$E")"; mkdir -p "$E"; cp -a "$WORK/small" "$E/ws"
start_hub "$E/hub"; INV=$(g invite create --name n1 --data-dir "$E/hub")
GANGLION_LOG=warn "$BIN" node join "$INV" --workspace "$E/ws" --state-dir "$E/state" --name n1 >>"$LOGDIR/mirror-node.log" 2>&1 &
NODE_PID=$!; PIDS+=("$NODE_PID")
wait_sync "$E/hub" "$(find "$E/ws" -type f | wc -l)"
F=$(edit_rel small); ed=()
for i in $(seq "$EDITS"); do
  sleep 0.3   # let the previous edit's debounce window close (not timed)
  t0=$(now); eval "$(edit_cmd "$E/ws/$F")"
  until cmp -s "$E/ws/$F" "$E/hub/mirrors/n1/$F"; do sleep 0.002; done
  t1=$(now); ed+=("$(awk -v a="$t1" -v b="$t0" 'BEGIN{printf "%.1f", (a-b)*1000}')")
done
emit_stats "edit_visible" ms "${ed[@]}"
# Hub-side write → visible in the node's workspace (the two-way mirror): a
# `ganglion mirror put` of a new small file (CLI process, HTTP, staging and
# commit at the hub, control message, download, swap-in at the node) until
# the workspace holds it. p50 and p99 of PUTS (default 50).
pv=(); mkdir -p "$S/put-src"
for i in $(seq "${PUTS:-50}"); do
  printf 'put %s\n' "$i" >"$S/put-src/f$i.txt"
  t0=$(now); g mirror put n1 "bench-put/f$i.txt" --file "$S/put-src/f$i.txt" --data-dir "$E/hub" >/dev/null
  until cmp -s "$S/put-src/f$i.txt" "$E/ws/bench-put/f$i.txt" 2>/dev/null; do sleep 0.001; done
  t1=$(now); pv+=("$(awk -v a="$t1" -v b="$t0" 'BEGIN{printf "%.1f", (a-b)*1000}')")
done
echo "put_visible samples (in order): ${pv[*]}" >&2
emit_stats "put_visible" ms "${pv[@]}"
emit "put_visible_p99" "$(printf '%s\n' "${pv[@]}" | sort -n | awk '{v[NR]=$1} END{i=int(NR*0.99+0.999); if(i<1)i=1; print v[i]}')" ms "n=${#pv[@]} (nearest rank)"
stop "$NODE_PID"; stop "$HUB_PID"; eval "$(trash_cmd "$E")"
