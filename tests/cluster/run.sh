#!/usr/bin/env bash
# Starling agents on separate hosts, on one machine: six network namespaces
# joined by veth pairs to a bridge, one `starling agent` per host, tasks
# announced with the CLI from one host and done by command handlers. Then delay
# and loss on every link, a host cut off mid-part and brought back, and the
# bootstrap host killed while a new host joins through another.
#
# Needs root (network namespaces). Installs iproute2 (and iptables, when the
# kernel has no netem) if missing. Every name carries this run's PID, so two
# runs never collide; everything is removed on exit, failure included.
#
#   sudo bash tests/cluster/run.sh            # STL_KEEP=1 keeps the work directory
#   STL_LOG=info,starling_node=debug ...      # the agents' log filter (default info)
#   STL_LISTEN='["/ip4/0.0.0.0/tcp/7400"]' ...  # the agents' listen addresses (TOML)
#   STL_FIGURES=FILE ...                        # also writes the figures to FILE
#   STL_DELAY_MS=50 STL_JITTER_MS=10 STL_LOSS_PCT=2 ...  # the link emulation
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=$PWD/tests/cluster

# Link emulation on every host's egress: one-way delay, jitter, loss.
DELAY_MS=${STL_DELAY_MS:-50}
JITTER_MS=${STL_JITTER_MS:-10}
LOSS_PCT=${STL_LOSS_PCT:-2}
# Tasks measured under that emulation.
MEASURED_TASKS=6

RUN="stl-$$"
BRIDGE="$RUN-b"
SUBNET=10.77.0
WORK=""
PIDS=()
NAMESPACES=()
FAILED_STEP=""

step() { printf '\n==> [%s] %s\n' "$(date +%T)" "$*"; FAILED_STEP="$*"; }
info() { printf '    %s\n' "$*"; }
now_ms() { date +%s%3N; }

dump_logs() {
  [ -n "$WORK" ] && [ -d "$WORK" ] || return 0
  for f in "$WORK"/h*/agent.err "$WORK"/h*/agent.out "$WORK"/*.log; do
    [ -f "$f" ] || continue
    printf '\n----- %s (last 80 lines) -----\n' "${f#"$WORK"/}" >&2
    tail -n 80 "$f" >&2
  done
}

die() {
  DIED=1
  printf '\nCLUSTER FAILED at step "%s": %s\n' "$FAILED_STEP" "$*" >&2
  dump_logs
  exit 1
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ "$rc" -ne 0 ] && [ -z "${DIED:-}" ]; then
    printf '\nCLUSTER FAILED at step "%s" (exit %s)\n' "$FAILED_STEP" "$rc" >&2
    dump_logs
  fi
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for ns in "${NAMESPACES[@]}"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
  done
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
  wait 2>/dev/null
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null; done
  # A deleted namespace may linger a while in the kernel with its end of a veth
  # pair; deleting our end removes both now.
  for ns in "${NAMESPACES[@]}"; do ip link del "$RUN-${ns##*-h}" 2>/dev/null; done
  ip link del "$BRIDGE" 2>/dev/null
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ "$rc" -eq 0 ] && [ -z "${STL_KEEP:-}" ]; then
      rm -rf "$WORK"
    else
      printf 'work directory kept: %s\n' "$WORK" >&2
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Polls `command` every 0.2 s until it succeeds; fails after `limit` seconds.
wait_for() {
  local what=$1 limit=$2
  shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= end)); then die "waited ${limit}s: $what"; fi
    sleep 0.2
  done
}

fail() { die "$@"; }

# Like wait_for, but returns 1 on time-out (for a failure message of its own).
wait_for_quietly() {
  local end=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || return 1
    sleep 0.2
  done
}

# ---------------------------------------------------------------- set-up

step "prerequisites"
[ "$(id -u)" -eq 0 ] || fail "must run as root (network namespaces)"
if ! command -v ip >/dev/null || ! command -v tc >/dev/null; then
  apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null
fi
command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 >/dev/null; }
info "$(ip -V)"

step "build starling (debug)"
cargo build -p starling-node --bin starling
TARGET=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
BIN="$TARGET/debug/starling"
[ -x "$BIN" ] || fail "no binary at $BIN"
WORK=$(mktemp -d "/tmp/$RUN.XXXXXX")
info "binary $BIN, work directory $WORK"

step "bridge $BRIDGE and hosts h1..h6 on $SUBNET.0/24"
ip link add "$BRIDGE" type bridge
ip link set "$BRIDGE" up

# add_host N: namespace $RUN-hN with eth0 = $SUBNET.N, its veth peer on the bridge.
add_host() {
  local n=$1 ns="$RUN-h$1"
  ip netns add "$ns"
  NAMESPACES+=("$ns")
  ip link add "$RUN-$n" type veth peer name "$RUN-${n}n"
  ip link set "$RUN-${n}n" netns "$ns"
  ip -n "$ns" link set "$RUN-${n}n" name eth0
  ip -n "$ns" addr add "$SUBNET.$n/24" dev eth0
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 up
  ip link set "$RUN-$n" master "$BRIDGE" up
  mkdir -p "$WORK/h$n"
}
for n in 1 2 3 4 5 6; do add_host "$n"; done
info "namespaces: ${NAMESPACES[*]}"

# in_host N CMD...: CMD inside host N's namespace.
in_host() { local n=$1; shift; ip netns exec "$RUN-h$n" "$@"; }
# cli N ARGS...: the starling client on host N, talking to its own agent.
cli() { local n=$1; shift; in_host "$n" "$BIN" "$@" --api http://127.0.0.1:7401; }
# api N PATH: GET the control API of host N's agent.
api() {
  in_host "$1" python3 -c 'import sys, urllib.request
print(urllib.request.urlopen("http://127.0.0.1:7401" + sys.argv[1], timeout=10).read().decode())' "$2"
}
# json EXPR: evaluates a Python expression over `d` (stdin parsed as JSON).
# Its output is matched with `grep ... >/dev/null`, never `grep -q`: grep -q
# exits at the first match, and under pipefail the writer's broken pipe would
# fail the check.
json() { python3 -c "import json, sys; d = json.load(sys.stdin); r = ($1); print(r if not isinstance(r, (dict, list)) else json.dumps(r))"; }

declare -A PEER_ID HOST_OF SKILLS_OF
# Each of parse, render and check is missing on exactly one host, so when a
# member of a three-part task is cut off, a host outside the group can take over.
SKILLS_OF=([1]="parse render check" [2]="parse check report" [3]="render check report"
  [4]="parse render report" [5]="parse render check" [6]="parse render check report"
  [7]="archive")

# start_agent N BOOTSTRAP_ADDR: writes host N's key and config file, starts it.
start_agent() {
  local n=$1 bootstrap=$2 dir="$WORK/h$1"
  "$BIN" keygen --out "$dir/agent.key" >/dev/null
  {
    echo 'key = "agent.key"'
    echo 'data_dir = "data"'
    echo "listen = ${STL_LISTEN:-[\"/ip4/0.0.0.0/tcp/7400\", \"/ip4/0.0.0.0/udp/7400/quic-v1\"]}"
    [ -n "$bootstrap" ] && echo "bootstrap = [\"$bootstrap\"]"
    echo 'max_concurrent_tasks = 2'
    echo 'control_api = "127.0.0.1:7401"'
    echo 'metrics = "127.0.0.1:9464"'
    echo "log_level = \"${STL_LOG:-info}\""
    for s in ${SKILLS_OF[$n]}; do
      printf '\n[[skills]]\nname = "%s"\nlevel = "advanced"\n' "$s"
      printf '\n[handlers.%s]\ncommand = ["sh", "%s/work.sh"]\ntimeout_secs = 120\n' "$s" "$HERE"
    done
  } >"$dir/agent.toml"
  in_host "$n" env STL_HOST="h$n" "$BIN" agent --config "$dir/agent.toml" \
    >"$dir/agent.out" 2>"$dir/agent.err" &
  PIDS+=($!)
  eval "AGENT_PID_$n=$!"
  wait_for "h$n's agent prints its control API" 60 grep -q '^control-api ' "$dir/agent.out"
  PEER_ID[$n]=$(sed -n 's/^peer-id //p' "$dir/agent.out")
  HOST_OF[${PEER_ID[$n]}]=$n
  info "h$n $SUBNET.$n ${PEER_ID[$n]} skills: ${SKILLS_OF[$n]}"
}

# watch_events N: follows host N's event stream into h N/events.jsonl.
watch_events() {
  local n=$1
  cli "$n" watch --json >"$WORK/h$n/events.jsonl" 2>>"$WORK/h$n/watch.err" &
  PIDS+=($!)
  wait_for "h$n's event stream is ready" 30 grep -q '"kind":"ready"' "$WORK/h$n/events.jsonl"
}

# peer_count N: how many peers host N's agent is connected to.
peer_count() { api "$1" /v1/peers | json 'len(d)'; }
has_peers() { [ "$(peer_count "$1")" -ge "$2" ]; }

step "start one agent per host; all bootstrap from h1"
start_agent 1 ""
# The first address h1 prints on its own subnet (its TCP one, with the default
# listen addresses) is everyone's bootstrap address.
BOOT=$(sed -n "s|^listening \(/ip4/$SUBNET.1/.*/p2p/${PEER_ID[1]}\)$|\1|p" "$WORK/h1/agent.out" | head -1)
[ -n "$BOOT" ] || fail "h1 lists no address on $SUBNET.0/24: $(cat "$WORK/h1/agent.out")"
info "bootstrap address $BOOT"
for n in 2 3 4 5 6; do start_agent "$n" "$BOOT"; done
for n in 1 2 3 4 5 6; do watch_events "$n"; done

step "the mesh forms"
FORMED_AT=$(now_ms)
for n in 2 3 4 5 6; do wait_for "h$n connects to peers" 60 has_peers "$n" 1; done
wait_for "h1 (bootstrap) sees all five others" 60 has_peers 1 5
for n in 1 2 3 4 5 6; do info "h$n peers: $(peer_count "$n")"; done
PEERS_6=$(cli 6 peers)
grep -qx "${PEER_ID[1]}" <<<"$PEERS_6" || fail "starling peers on h6 does not list h1: $PEERS_6"
METRICS_3=$(api 3 /metrics)
grep -q '^starling_' <<<"$METRICS_3" || fail "h3's /metrics has no starling_ series"
info "h3 /metrics: $(grep -c '^starling_' <<<"$METRICS_3") starling_ samples"
info "mesh up in $(($(now_ms) - FORMED_AT)) ms"

# announce N OUT ARGS...: announces from host N with --wait --json into OUT.
announce() {
  local n=$1 out=$2
  shift 2
  timeout 240 ip netns exec "$RUN-h$n" "$BIN" task announce "$@" --deadline 180 --wait --json \
    --api http://127.0.0.1:7401 >"$out" 2>"$out.err"
}
task_of() { tail -n +2 "$1"; }

# check_done OUT TEXT...: the task in OUT completed, with one result per skill
# (parse, render, check) whose output carries TEXT.
check_done() {
  local out=$1 text=$2 state
  state=$(task_of "$out" | json 'd["state"]') || fail "no task JSON in $out: $(cat "$out" "$out.err")"
  [ "$state" = completed ] || fail "task $(head -1 "$out") is $state: $(cat "$out")"
  task_of "$out" | json "all(r['success'] and r['output'].rstrip().endswith(': $text') for r in d['results']) and sorted(r['skill'] for r in d['results']) == ['check', 'parse', 'render']" \
    | grep -x True >/dev/null || fail "unexpected results: $(task_of "$out")"
}
# latencies OUT: "formation completion" in ms, from the initiator's record.
latencies() {
  task_of "$1" | json '"%d %d" % (d["formed_at_ms"] - d["announced_at_ms"], d["finished_at_ms"] - d["announced_at_ms"])'
}
SKILLS3=(--skill parse:novice --skill render:novice --skill check:novice)

step "three tasks announced from h6 at once complete through command handlers"
# Nine parts on five hosts with two slots each: some invitees are busy and
# decline, and are invited again once a slot frees.
PLAIN=()
for i in 1 2 3; do
  announce 6 "$WORK/plain-$i.json" "${SKILLS3[@]}" --desc "plain $i" --payload "2 200 plain-$i" &
  PLAIN+=($!)
done
for i in 1 2 3; do
  wait "${PLAIN[$((i - 1))]}" || fail "task plain-$i: $(cat "$WORK/plain-$i.json"*)"
  check_done "$WORK/plain-$i.json" "plain-$i"
  info "plain-$i: formation/completion ms $(latencies "$WORK/plain-$i.json")"
done

# ---------------------------------------------------------------- link emulation

# emulate_link N: delay, jitter and loss on host N's outgoing packets, with tc
# netem where the kernel has it; else held and dropped in user space (NFQUEUE)
# by linkem.py with the same parameters.
EMULATION=""
emulate_link() {
  local n=$1
  if [ -z "$EMULATION" ]; then
    if in_host "$n" tc qdisc add dev eth0 root netem delay "${DELAY_MS}ms" "${JITTER_MS}ms" loss "${LOSS_PCT}%" 2>/dev/null; then
      EMULATION="tc netem"
      return
    fi
    EMULATION="NFQUEUE (tests/cluster/linkem.py: this kernel has no sch_netem)"
    if ! command -v iptables-legacy >/dev/null; then
      apt-get update -qq && apt-get install -y -qq iptables >/dev/null
    fi
  fi
  if [ "$EMULATION" = "tc netem" ]; then
    in_host "$n" tc qdisc add dev eth0 root netem delay "${DELAY_MS}ms" "${JITTER_MS}ms" loss "${LOSS_PCT}%"
    return
  fi
  in_host "$n" python3 "$HERE/linkem.py" --delay-ms "$DELAY_MS" --jitter-ms "$JITTER_MS" \
    --loss "$(awk -v p="$LOSS_PCT" 'BEGIN { print p / 100 }')" --seed "$n" \
    >"$WORK/h$n/linkem.log" 2>&1 &
  PIDS+=($!)
  wait_for "h$n's link emulator binds its queue" 10 grep -qx ready "$WORK/h$n/linkem.log"
  in_host "$n" iptables-legacy -A OUTPUT -o eth0 -j NFQUEUE --queue-num 0
}

step "delay ${DELAY_MS} ms ± ${JITTER_MS} ms and ${LOSS_PCT}% loss on every link"
for n in 1 2 3 4 5 6; do emulate_link "$n"; done
info "emulation: $EMULATION"
# The round trip between two hosts now takes about twice the one-way delay.
RTT=$(in_host 6 python3 -c 'import socket, time
t = time.monotonic()
try:
    socket.create_connection(("'"$SUBNET"'.2", 7401), timeout=5)
except OSError:
    pass
print(round((time.monotonic() - t) * 1000))')
info "TCP handshake h6 -> h2: ${RTT} ms"
[ "$RTT" -ge $((2 * (DELAY_MS - JITTER_MS))) ] || fail "the links show no delay (${RTT} ms)"

step "$MEASURED_TASKS tasks under the emulated links, one after another"
FORMATION=()
COMPLETION=()
for i in $(seq 1 "$MEASURED_TASKS"); do
  announce 6 "$WORK/netem-$i.json" "${SKILLS3[@]}" --desc "netem $i" --payload "2 200 netem-$i" \
    || fail "task netem-$i: $(cat "$WORK/netem-$i.json"*)"
  check_done "$WORK/netem-$i.json" "netem-$i"
  read -r f c < <(latencies "$WORK/netem-$i.json")
  FORMATION+=("$f")
  COMPLETION+=("$c")
  info "netem-$i: formation ${f} ms, completion ${c} ms (parts: 2 steps x 200 ms)"
done

# ---------------------------------------------------------------- a host cut off

step "cut a member's link while it works on a part"
announce 6 "$WORK/cut.json" "${SKILLS3[@]}" --desc "cut" --payload "16 500 cut" &
CUT_ANNOUNCE=$!
wait_for "h6 announces the task" 30 test -s "$WORK/cut.json"
CUT_ID=$(head -1 "$WORK/cut.json")
all_working() {
  api 6 "/v1/tasks/$CUT_ID" | json 'len(d["members"]) == 3 and all(m["progress"] >= 0.1 for m in d["members"])' | grep -x True >/dev/null
}
wait_for "every member of $CUT_ID reports progress" 90 all_working
MEMBERS=$(api 6 "/v1/tasks/$CUT_ID" | json '" ".join(m["skill"] + "=" + m["agent"] for m in d["members"])')
VICTIM="" VICTIM_SKILL=""
for m in $MEMBERS; do
  n=${HOST_OF[${m#*=}]:-}
  [ -n "$n" ] && [ "$n" != 6 ] && { VICTIM=$n; VICTIM_SKILL=${m%%=*}; break; }
done
[ -n "$VICTIM" ] || fail "no member of $CUT_ID to cut off ($MEMBERS)"
ip link set "$RUN-$VICTIM" down
CUT_AT=$(now_ms)
info "h$VICTIM (${VICTIM_SKILL}) cut off at $CUT_AT; members were $MEMBERS"

wait "$CUT_ANNOUNCE" || fail "task $CUT_ID did not complete without h$VICTIM: $(cat "$WORK/cut.json"*)"
check_done "$WORK/cut.json" cut
REPLACED_BY=$(task_of "$WORK/cut.json" | json "[r['member'] for r in d['results'] if r['skill'] == '$VICTIM_SKILL'][0]")
[ "$REPLACED_BY" != "${PEER_ID[$VICTIM]}" ] || fail "h$VICTIM's result counted although it was cut off"
task_of "$WORK/cut.json" | json "[r['output'] for r in d['results'] if r['skill'] == '$VICTIM_SKILL'][0]" \
  | grep "from step [1-9]" >/dev/null || fail "the replacement did not resume from a checkpoint: $(task_of "$WORK/cut.json")"
# event_at N KIND FIELD VALUE: at_ms of host N's first KIND event for the cut
# task whose FIELD is VALUE.
event_at() {
  python3 - "$WORK/h$1/events.jsonl" "$CUT_ID" "$2" "$3" "$4" <<'PY'
import json, sys
path, task, kind, field, value = sys.argv[1:]
for line in open(path):
    e = json.loads(line)
    if e.get("kind") == kind and e.get("task_id") == task and str(e.get(field)) == value:
        print(e["at_ms"])
        break
else:
    sys.exit(1)
PY
}
FAILED_AT=$(event_at 6 member_failed member "${PEER_ID[$VICTIM]}") || fail "h6 never declared h$VICTIM failed"
STARTED_AT=$(event_at 6 replacement_started member "$REPLACED_BY") || fail "no replacement_started on h6"
DETECTION=$((FAILED_AT - CUT_AT))
REASSIGNMENT=$((STARTED_AT - CUT_AT))
CUT_COMPLETION=$(task_of "$WORK/cut.json" | json "d['finished_at_ms'] - $CUT_AT")
info "h${HOST_OF[$REPLACED_BY]} took over ${VICTIM_SKILL}: failure declared after ${DETECTION} ms, replacement started after ${REASSIGNMENT} ms, task done ${CUT_COMPLETION} ms after the cut"

step "bring h$VICTIM back: its group document converges and it takes new work"
ip link set "$RUN-$VICTIM" up
BACK_AT=$(now_ms)
wait_for "h$VICTIM reconnects" 90 has_peers "$VICTIM" 1
# The coordinator keeps the finished group's document; the returning member's
# replica must catch up with it (same heads), or close after learning the end.
heads_on() { api "$1" /v1/groups | json "[g['heads'] for g in d if g['task_id'] == '$CUT_ID']"; }
converged() {
  local here there
  here=$(heads_on "$VICTIM")
  there=$(heads_on 6)
  [ "$there" != "[]" ] || return 1
  [ "$here" = "$there" ] || { [ "$here" = "[]" ] && event_at "$VICTIM" group_closed task_id "$CUT_ID" >/dev/null; }
}
if ! wait_for_quietly 120 converged; then
  fail "h$VICTIM's group document for $CUT_ID never converged with h6's:
h$VICTIM groups: $(api "$VICTIM" /v1/groups)
h6 groups: $(api 6 /v1/groups)
h$VICTIM peers: $(api "$VICTIM" /v1/peers)"
fi
CONVERGENCE=$(($(now_ms) - BACK_AT))
info "converged ${CONVERGENCE} ms after the link came back: h$VICTIM $(heads_on "$VICTIM"), h6 $(heads_on 6)"

# A task that needs every holder of the skill can only complete with h$VICTIM
# (h6 announces it, and an initiator does not offer for its own task).
HOLDERS=0
for n in 1 2 3 4 5; do [[ " ${SKILLS_OF[$n]} " == *" $VICTIM_SKILL "* ]] && HOLDERS=$((HOLDERS + 1)); done
announce 6 "$WORK/back.json" --skill "$VICTIM_SKILL:novice:$HOLDERS" --desc "all hands" --payload "1 100 back" \
  || fail "the all-hands task failed: $(cat "$WORK/back.json"*)"
task_of "$WORK/back.json" | json "d['state'] == 'completed' and '${PEER_ID[$VICTIM]}' in [r['member'] for r in d['results'] if r['success']]" \
  | grep -x True >/dev/null || fail "h$VICTIM took no part in the all-hands task: $(task_of "$WORK/back.json")"
info "h$VICTIM did a part of the $HOLDERS-agent $VICTIM_SKILL task"

# ---------------------------------------------------------------- bootstrap host dies

step "kill the bootstrap host h1; a new host h7 joins through h2"
kill -9 "$AGENT_PID_1"
ip link set "$RUN-1" down
add_host 7
emulate_link 7
JOIN_AT=$(now_ms)
start_agent 7 "$(sed -n "s|^listening \(/ip4/$SUBNET.2/.*\)$|\1|p" "$WORK/h2/agent.out" | head -1)"
watch_events 7
wait_for "h7 connects through h2" 60 has_peers 7 1
# Only h7 has "archive": h6 finds it through the mesh, without h1.
announce 6 "$WORK/archive.json" --skill archive:novice --desc "archive" --payload "1 100 archive" \
  || fail "h6's archive task failed: $(cat "$WORK/archive.json"*)"
task_of "$WORK/archive.json" | json "d['state'] == 'completed' and d['results'][0]['member'] == '${PEER_ID[7]}'" \
  | grep -x True >/dev/null || fail "the archive task was not done by h7: $(task_of "$WORK/archive.json")"
JOINED=$(($(now_ms) - JOIN_AT))
# And h7 coordinates a task of its own.
announce 7 "$WORK/from-h7.json" "${SKILLS3[@]}" --desc "from h7" --payload "2 200 from-h7" \
  || fail "h7's task failed: $(cat "$WORK/from-h7.json"*)"
check_done "$WORK/from-h7.json" from-h7
task_of "$WORK/from-h7.json" | json "'${PEER_ID[1]}' not in [r['member'] for r in d['results']]" | grep -x True >/dev/null \
  || fail "a dead host's result was counted"
info "h7 joined without h1 and its first task was done ${JOINED} ms after it started; h7 coordinated one more"

# ---------------------------------------------------------------- figures

step "figures ($EMULATION: ${DELAY_MS} ms ± ${JITTER_MS} ms, ${LOSS_PCT}% loss per link)"
stats() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1; s += $1 } END { printf "min %d  median %d  max %d  mean %d", v[1], v[int((NR + 1) / 2)], v[NR], s / NR }'; }
{
  echo "tasks: 3 parts (parse, render, check) on 3 hosts, each part 2 steps x 200 ms"
  echo "formation latency (announce -> group formed), ms, $MEASURED_TASKS tasks: $(stats "${FORMATION[@]}")"
  echo "completion latency (announce -> finished), ms, $MEASURED_TASKS tasks: $(stats "${COMPLETION[@]}")"
  echo "member cut off mid-part (16 steps x 500 ms): failure declared ${DETECTION} ms, replacement started ${REASSIGNMENT} ms, task finished ${CUT_COMPLETION} ms after the cut"
  echo "returning member's group document converged ${CONVERGENCE} ms after its link came back"
  echo "bootstrap host killed: a new host joined through another and did its first task ${JOINED} ms after it started"
} | tee "$WORK/figures.txt" | sed 's/^/    /'
if [ -n "${STL_FIGURES:-}" ]; then cp "$WORK/figures.txt" "$STL_FIGURES"; fi

printf '\n==> cluster passed in %d s\n' "$SECONDS"
