#!/usr/bin/env bash
# Every benchmark of BENCHMARKS.md, with one command. Not a test: not run by CI
# or scripts/test.sh. Takes about 15 minutes on 2 cores (builds not counted).
#
#   scripts/bench.sh            # micro + load + scale
#   scripts/bench.sh micro      # only the criterion micro-benchmarks
#   scripts/bench.sh load [bench options]    e.g. load --duration 5 --rounds 2
#   scripts/bench.sh load --backend etcd [bench options]
#                                            oidcvault on a 3-member etcd cluster (loopback),
#                                            one node and two, beside the etcd ceiling
#   scripts/bench.sh scale [bench options]   e.g. scale --domains 10000 --mixed-secs 60
#   scripts/bench.sh profile [bench options] where a POST's instructions go (callgrind;
#                                            --tool perf: its CPU, kernel included)
#   scripts/bench.sh signin [bench options]  sign-ins through the broker against a stub
#                                            IdP, beside the IdP round trips alone
#                                            e.g. signin --duration 10 --conns 1,8,32
#
# Results: target/bench-results/{micro,load,scale,profile,signin}.json and .md tables;
# after load and signin, SVG charts in target/bench-results/charts/.
set -euo pipefail
cd "$(dirname "$0")/.."

what="${1:-all}"
[ $# -gt 0 ] && shift

# ---- the load generator (wrk, from Debian) ---------------------------------------
if [ "$what" != micro ] && [ "$what" != signin ] && ! command -v wrk >/dev/null; then
  echo "== installing wrk"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
fi

# ---- etcd (Debian's etcd-server; etcdctl from etcd-client), for load --backend etcd
etcd_load=no
if [ "$what" = load ] && [[ " $* " == *" --backend etcd "* ]]; then
  etcd_load=yes
fi
if [ "$etcd_load" = yes ] && { ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; }; then
  echo "== installing etcd"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client
fi

if [ "$what" = profile ] && [[ " $* " == *" perf "* ]] && ! command -v perf >/dev/null; then
  echo "== installing perf"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf
fi

if [ "$what" = profile ] && ! command -v valgrind >/dev/null; then
  echo "== installing valgrind"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind
fi

build() {
  echo "== cargo build --release (server, baselines, bench driver)"
  if [ "$etcd_load" = yes ]; then
    cargo build --release --bin oidcvault --example baseline_etcd --example bench
  else
    cargo build --release --bin oidcvault --example baseline_http \
      --example baseline_store --example baseline_matched --example bench
  fi
}

# Benchmarks run at a higher priority (nice -5; needs root, else nice warns and
# runs them as they are), so that other work on a shared machine disturbs less.
micro() { nice -n -5 cargo bench --bench micro -- "$@"; }

# SVG charts of the load and sign-in figures (scripts/bench_charts.py, Python's
# standard library only) into target/bench-results/charts/; copy them to
# docs/charts/ to publish a run's (BENCHMARKS.md links them there).
charts() {
  if command -v python3 >/dev/null; then
    python3 scripts/bench_charts.py
  else
    echo "   no python3: charts not drawn (scripts/bench_charts.py)"
  fi
}

case "$what" in
  micro) micro "$@" ;;
  load) build; target/release/examples/bench load "$@"; charts ;;
  scale) build; target/release/examples/bench scale "$@" ;;
  profile) build; target/release/examples/bench profile "$@" ;;
  signin)
    # No wrk, no baselines: the driver is the load (browsers) and runs the stub IdP.
    echo "== cargo build --release (server, bench driver)"
    cargo build --release --bin oidcvault --example bench
    target/release/examples/bench signin "$@"
    charts
    ;;
  all)
    build
    target/release/examples/bench load
    charts
    target/release/examples/bench scale
    micro
    ;;
  *) echo "usage: scripts/bench.sh [all|micro|load|scale|profile|signin] [options]" >&2; exit 2 ;;
esac
