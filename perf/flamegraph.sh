#!/usr/bin/env bash
# One command from a fresh machine to flamegraphs of zring's AND ztunnel's outbound (client's
# node) and inbound (server's node) processes under the same datapath bench scenario, in one run.
# Run as root from anywhere:
#
#   perf/flamegraph.sh [--fp] [--secs N] [--driver uring|legacy] [--cores N] [MODE [WORKLOAD [CONNS]]]
#
#   MODE       hbone (default) | plaintext
#   WORKLOAD   bulk (default) | rr | crr
#   CONNS      concurrent connections (default 8)
#   --fp       unwind with frame pointers (rebuilds zring with -C force-frame-pointers=yes in its
#              own target dir; ztunnel's build has them already) instead of DWARF call graphs
#              (the default: works on any build)
#   --secs N   seconds recorded (default 5)
#   --driver   zring's monoio driver (default uring)
#   --cores N  runtimes per zring and worker threads per ztunnel (default 1)
#
# ztunnel comes from the peers directory (ZRING_PEERS_DIR, default ../shared/peers beside the
# checkout: ztunnel/as-node-proxy.sh); without it the script stops, unless ZRING_BENCH_PROXY=none
# asks for zring alone. Installs what is missing: perf (Debian's linux-perf) and inferno
# (crates.io). Runs `cargo bench --bench datapath` for the direct baseline and the chosen
# scenario on zring and on ztunnel, with `perf record` attached to both proxy processes of each
# during its measurement. Output, in $CARGO_TARGET_DIR (default target)/zring-bench/flamegraph/,
# named so that the two proxies of one side sort next to each other:
#   <mode>-<workload>-<conns>-<N>c-outbound-zring-<driver>.svg   zring, client's node
#   <mode>-<workload>-<conns>-<N>c-outbound-ztunnel.svg          ztunnel, client's node
#   <mode>-<workload>-<conns>-<N>c-inbound-zring-<driver>.svg    zring, server's node
#   <mode>-<workload>-<conns>-<N>c-inbound-ztunnel.svg           ztunnel, server's node
#   datapath.txt / .json / .svg   the bench's figures for that same run (ratios zring / ztunnel)
#   data/*.perf.data              the raw profiles (perf report -i)
# perf/README.md explains how to read them.
set -euo pipefail
cd "$(dirname "$0")/.."

INFERNO_VERSION=0.12.8
fp=0 secs=5 driver=uring cores=1
while [ $# -gt 0 ]; do
  case "$1" in
    --fp) fp=1; shift ;;
    --secs) secs=$2; shift 2 ;;
    --driver) driver=$2; shift 2 ;;
    --cores) cores=$2; shift 2 ;;
    -h|--help) sed -n '2,37p' "$0"; exit 0 ;;
    -*) echo "flamegraph.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
mode=${1:-hbone} workload=${2:-bulk} conns=${3:-8}
case "$mode" in hbone|plaintext) ;; *) echo "MODE must be hbone or plaintext" >&2; exit 2 ;; esac
case "$workload" in bulk|rr|crr) ;; *) echo "WORKLOAD must be bulk, rr or crr" >&2; exit 2 ;; esac
case "$driver" in uring|legacy) ;; *) echo "--driver must be uring or legacy" >&2; exit 2 ;; esac
case "$cores" in [1-9]|[1-9][0-9]) ;; *) echo "--cores must be a number of runtimes, 1..99" >&2; exit 2 ;; esac

# The other proxy: the real ztunnel from the peers directory unless told otherwise.
peers=${ZRING_PEERS_DIR:-$PWD/../shared/peers}
want=4
if [ "${ZRING_BENCH_PROXY:-}" = none ] || [ "${ZRING_BENCH_PROXY:-}" = off ]; then
  want=2
elif [ -z "${ZRING_BENCH_PROXY:-}" ] && [ ! -f "$peers/ztunnel/as-node-proxy.sh" ]; then
  echo "flamegraph.sh: no ztunnel to profile beside zring: $peers/ztunnel/as-node-proxy.sh is missing." >&2
  echo "  Put the peers kit at ../shared/peers beside the checkout, name it with ZRING_PEERS_DIR," >&2
  echo "  or profile zring alone with ZRING_BENCH_PROXY=none." >&2
  exit 1
fi
export ZRING_PEERS_DIR=$peers

if [ "$(id -u)" != 0 ]; then
  echo "flamegraph.sh: run as root (the bench builds network namespaces; perf attaches to zring)" >&2
  exit 1
fi

# perf: Debian's linux-perf (one build that runs on any kernel).
if ! perf version >/dev/null 2>&1; then
  echo "flamegraph.sh: installing linux-perf"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends linux-perf nftables iproute2 >/dev/null
fi
perf version >/dev/null || { echo "flamegraph.sh: perf does not run here" >&2; exit 1; }
export PATH="$HOME/.cargo/bin:$PATH"

if ! command -v inferno-flamegraph >/dev/null || ! command -v inferno-collapse-perf >/dev/null; then
  echo "flamegraph.sh: installing inferno $INFERNO_VERSION (cargo install)"
  cargo install --locked --quiet inferno --version "$INFERNO_VERSION"
fi

# Hardware cycles where the machine has them (bare metal), the software clock otherwise (most
# VMs: `perf stat -e cycles` says <not supported>). Both sample where CPU time goes.
if perf stat -e cycles -x, true 2>&1 | grep -q '^[0-9]'; then event=cycles; else event=cpu-clock; fi

target=${CARGO_TARGET_DIR:-$PWD/target}
out=$target/zring-bench/flamegraph
rm -rf "$out/data"
mkdir -p "$out/data"
if [ "$fp" = 1 ]; then
  # Frame pointers in zring and every crate; std is prebuilt without them, so its frames show
  # as leaves. A separate target dir keeps the normal build intact.
  export RUSTFLAGS="${RUSTFLAGS:-} -C force-frame-pointers=yes"
  export CARGO_TARGET_DIR=$target/frame-pointers
  callgraph=fp
else
  callgraph=dwarf
fi

echo "flamegraph.sh: zring ($driver) and ztunnel, $mode $workload × $conns connections, $cores core(s), $secs s, event $event, call graph $callgraph"
ZRING_BENCH_SCENARIOS=$mode ZRING_BENCH_WORKLOADS=$workload ZRING_BENCH_CONNS=$conns \
ZRING_BENCH_DRIVER=$driver ZRING_BENCH_CORES=$cores ZRING_BENCH_SECS=$secs ZRING_BENCH_OUT=$out \
ZRING_BENCH_PERF=$out/data ZRING_BENCH_PERF_EVENT=$event ZRING_BENCH_PERF_CALLGRAPH=$callgraph \
  cargo bench --locked --bench datapath

shopt -s nullglob
made=0
for data in "$out"/data/*.perf.data; do
  name=$(basename "$data" .perf.data)
  svg=$out/$name.svg
  # --no-inline: perf 6.1 resolves inlined frames through addr2line, one process per address,
  # which takes minutes on a DWARF profile; the inlined callers still show in the parent frame.
  perf script --no-inline -i "$data" 2>/dev/null \
    | inferno-collapse-perf --all \
    | inferno-flamegraph --title "$name ($event, $callgraph)" --width 1600 > "$svg"
  echo "flamegraph: $svg"
  made=$((made + 1))
done
[ "$made" -gt 0 ] || { echo "flamegraph.sh: no profile was recorded" >&2; exit 1; }
[ "$made" -ge "$want" ] || { echo "flamegraph.sh: $made flamegraphs, expected $want (outbound and inbound of each proxy)" >&2; exit 1; }
