#!/usr/bin/env bash
# bench/tasks.sh — remote execution figures (issue 3), rerunnable, release build.
#   (a) round trip of `true`: in-process HTTP submit → node sandbox → finished
#       (`ganglion bench tasks`), the whole `ganglion run -- true` command, a local
#       `true`, and `ssh 127.0.0.1 true` to a throwaway sshd (hyperfine, warmup).
#   (b) throughput over 100 nodes, journal on SQLite, RUNS runs, median reported:
#       `--simulated` (real agents, streams and journal; each task reported started
#       and exited 0 at once: the hub's figure) and with real sandboxed `true`
#       (on the same 2 cores the nodes' fork/exec dominates).
# Env: RUNS, TASKS, SIM_TASKS, CONC, SSH_PORT, GANGLION_BIN (a binary to measure; default: build this tree).
# Result lines "name value unit  # details" on stdout; raw output in bench/results/.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd); REPO=$(dirname "$HERE")
RUNS=${RUNS:-3}; TASKS=${TASKS:-3000}; SIM_TASKS=${SIM_TASKS:-20000}; CONC=${CONC:-64}; SSH_PORT=${SSH_PORT:-22923}
OUT=$HERE/results/tasks-$(date +%Y%m%d-%H%M%S); mkdir -p "$OUT"
emit() { printf '%-36s %10s %-7s%s\n' "$1" "$2" "$3" "${4:+  # $4}" | tee -a "$OUT/summary.txt"; }
median() { sort -g | awk '{a[NR]=$1} END{print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }
command -v hyperfine >/dev/null || { echo "install hyperfine (apt-get install hyperfine)" >&2; exit 1; }

# GANGLION_BIN=path: measure that binary (e.g. a saved build of an earlier commit) instead of building.
if [ -n "${GANGLION_BIN:-}" ]; then G=$GANGLION_BIN; else
  (cd "$REPO" && cargo build --release -p ganglion >&2)
  G=${CARGO_TARGET_DIR:-$REPO/target}/release/ganglion
fi
T=$(mktemp -d /tmp/ganglion-bench-tasks.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT

# --- (a) in-process round trip (3 runs) ---
for i in $(seq "$RUNS"); do
  GANGLION_LOG=error "$G" bench tasks --nodes 1 --tasks 0 --roundtrips 300 --warmup 30 \
    > "$OUT/roundtrip-$i.txt" 2>"$OUT/roundtrip-$i.log"
done
for k in local_spawn_true_p50 roundtrip_true_p50 roundtrip_overhead_p50; do
  v=$(grep -h "^tasks.$k " "$OUT"/roundtrip-*.txt | awk '{print $2}' | median)
  emit "tasks.$k" "$v" ms "median of $RUNS runs of bench tasks (300 round trips each)"
done

# --- (a) whole commands: ganglion run, local true, ssh ---
GANGLION_LOG=error "$G" hub --data-dir "$T/hub" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 >"$OUT/hub.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 200); do [ -e "$T/hub/run/endpoints.json" ] && break; sleep 0.05; done
INV=$("$G" invite create --data-dir "$T/hub" --name n1); mkdir -p "$T/ws"
GANGLION_LOG=error "$G" node join "$INV" --workspace "$T/ws" --state-dir "$T/state" >"$OUT/node.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 200); do "$G" run --data-dir "$T/hub" --node n1 -- true 2>/dev/null && break; sleep 0.1; done

K=$T/ssh; mkdir -p "$K/home"; chmod 700 "$K"
ssh-keygen -q -t ed25519 -N '' -f "$K/host_key"; ssh-keygen -q -t ed25519 -N '' -f "$K/client_key"
cp "$K/client_key.pub" "$K/authorized_keys"
cat > "$K/sshd_config" <<C
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $K/host_key
AuthorizedKeysFile $K/authorized_keys
PidFile $K/sshd.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
SetEnv HOME=$K/home
C
cat > "$K/ssh_config" <<C
Host 127.0.0.1
  Port $SSH_PORT
  User root
  IdentityFile $K/client_key
  IdentitiesOnly yes
  UserKnownHostsFile $K/known_hosts
  StrictHostKeyChecking accept-new
  BatchMode yes
C
mkdir -p /run/sshd
/usr/sbin/sshd -D -e -f "$K/sshd_config" 2>"$OUT/sshd.log" & PIDS+=($!)
for _ in $(seq 50); do ssh -F "$K/ssh_config" 127.0.0.1 true 2>/dev/null && break; sleep 0.1; done

hyperfine -N --warmup 10 --runs 100 --export-json "$OUT/hyperfine.json" \
  -n local_true 'true' \
  -n ganglion_run_true "$G run --data-dir $T/hub --node n1 -- true" \
  -n ssh_true "ssh -F $K/ssh_config 127.0.0.1 true" | tee "$OUT/hyperfine.txt" >&2
for n in local_true ganglion_run_true ssh_true; do
  v=$(jq -r --arg n "$n" '.results[] | select(.command==$n) | .median*1000' "$OUT/hyperfine.json")
  emit "cmd.$n" "$(printf %.3f "$v")" ms "hyperfine median, 100 runs, whole process"
done

# --- (b) throughput over 100 nodes ---
for i in $(seq "$RUNS"); do
  GANGLION_LOG=error timeout 600 "$G" bench tasks --nodes 100 --tasks "$TASKS" --concurrency "$CONC" \
    --roundtrips 10 --warmup 5 > "$OUT/throughput-$i.txt" 2>"$OUT/throughput-$i.log" || echo "run $i failed" >&2
done
v=$(grep -h "^tasks.throughput " "$OUT"/throughput-*.txt | awk '{print $2}' | median)
emit tasks.throughput_100_nodes "${v:-n/a}" tasks/s "median of $RUNS runs, $TASKS sandboxed tasks, $CONC in flight"
for i in $(seq "$RUNS"); do
  GANGLION_LOG=error timeout 600 "$G" bench tasks --simulated --nodes 100 --tasks "$SIM_TASKS" --concurrency "$CONC" \
    --roundtrips 10 --warmup 5 > "$OUT/simulated-$i.txt" 2>"$OUT/simulated-$i.log" || echo "run $i failed" >&2
done
v=$(grep -h "^tasks.throughput_simulated " "$OUT"/simulated-*.txt | awk '{print $2}' | median)
emit tasks.throughput_100_simulated_nodes "${v:-n/a}" tasks/s "median of $RUNS runs, $SIM_TASKS tasks, $CONC in flight (goal >= 2000)"
echo "raw: $OUT" >&2
