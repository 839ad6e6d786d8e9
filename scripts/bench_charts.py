#!/usr/bin/env python3
"""SVG charts of BENCHMARKS.md's main figures, from the bench driver's results.

    scripts/bench_charts.py [--results target/bench-results] [--out target/bench-results/charts]

Reads `load.json` (from `scripts/bench.sh load`) and, when present, `signin.json`
(`scripts/bench.sh signin`), and writes one chart per method and measure:
throughput and p99 latency against connections, oidcvault beside its baselines
(the HTTP ceiling, the storage ceiling and, when the results have it, the matched
baseline; for sign-ins, the IdP round trips alone).
The values are the summaries the driver computed (medians over rounds).

Python standard library only, on purpose: the charts need no plotting crate in
the bench driver, whose dev-dependencies `cargo test` would compile every time.
scripts/bench.sh calls this after `load` and `signin`; to publish a run's charts,
copy them to docs/charts/ (BENCHMARKS.md links them there).
"""

import argparse
import datetime
import json
import math
import os
import sys
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 720, 420
LEFT, RIGHT, TOP, BOTTOM = 80, 190, 56, 92

# Server key in the results -> (legend, colour, dash pattern, marker radius).
LOAD_SERIES = [
    ("oidcvault", "oidcvault", "#1f5fbf", "", 4.5),
    ("http_ceiling", "HTTP ceiling (bare actix-web)", "#6b6b6b", "6 4", 3.5),
    ("storage_ceiling", "storage ceiling (actix-web + sled, group commit)", "#d9730d", "2 3", 3.5),
    # Drawn only when the results have it (load.json from before it existed has not).
    ("matched_baseline", "matched baseline (oidcvault's storage work alone)", "#2e8b57", "8 3 2 3", 3.5),
    # `bench load --compare BIN`: another oidcvault build in the same rounds.
    ("oidcvault_compare", "oidcvault, compared build (--compare)", "#8e44ad", "", 3.5),
]
SIGNIN_SERIES = [
    ("signin", "sign-ins through oidcvault", "#1f5fbf", "", 4.5),
    ("idp_only", "IdP round trips alone (baseline)", "#6b6b6b", "6 4", 3.5),
]


def nice_ceiling(v):
    """The smallest 1/1.5/2/2.5/3/4/5/7.5 x 10^k at or above v (v > 0): five even
    steps of readable numbers."""
    if not (v > 0) or math.isinf(v):
        return 1.0
    exp = math.floor(math.log10(v))
    for m in (1, 1.5, 2, 2.5, 3, 4, 5, 7.5, 10):
        top = m * 10**exp
        if top >= v * (1 - 1e-9):
            return top
    return 10 ** (exp + 1)


def fmt(v):
    """A tick or value label: 12k, 1.5M, 0.25, 3."""
    if v == 0:
        return "0"
    if abs(v) >= 1e6:
        return f"{v / 1e6:g}M"
    if abs(v) >= 1e3:
        return f"{v / 1e3:g}k"
    if abs(v) >= 10:
        return f"{v:.0f}"
    return f"{v:.3g}"


def finite(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def line_chart(title, y_label, x_label, categories, series, caption):
    """An SVG line chart: `categories` on x (evenly spaced), `series` a list of
    (key, legend, colour, dash, radius, values) with one value (or None) per
    category. Returns the document as a string."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    values = [v for s in series for v in s[5] if finite(v)]
    y_max = nice_ceiling(max(values) if values else 1.0)
    steps = 5

    def x_at(i):
        if len(categories) == 1:
            return LEFT + plot_w / 2
        return LEFT + 20 + i * (plot_w - 40) / (len(categories) - 1)

    def y_at(v):
        return TOP + plot_h - (v / y_max) * plot_h

    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="Helvetica, Arial, sans-serif" '
        f'font-size="12" role="img">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<text x="{LEFT}" y="26" font-size="15" font-weight="bold">{escape(title)}</text>',
    ]
    # Grid and y axis.
    for k in range(steps + 1):
        v = y_max * k / steps
        y = y_at(v)
        out.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" '
            f'stroke="{"#333333" if k == 0 else "#e3e3e3"}" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end" fill="#333333">{fmt(v)}</text>'
        )
    out.append(
        f'<text transform="translate(18 {TOP + plot_h / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle" fill="#333333">{escape(y_label)}</text>'
    )
    # x axis.
    for i, c in enumerate(categories):
        x = x_at(i)
        out.append(
            f'<line x1="{x:.1f}" y1="{TOP + plot_h}" x2="{x:.1f}" y2="{TOP + plot_h + 5}" stroke="#333333"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{TOP + plot_h + 19}" text-anchor="middle" fill="#333333">{escape(str(c))}</text>'
        )
    out.append(
        f'<text x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h + 38}" text-anchor="middle" '
        f'fill="#333333">{escape(x_label)}</text>'
    )
    # Series: a polyline per run of consecutive values (a missing value is a gap).
    for key, legend, colour, dash, radius, vals in series:
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<g class="series" data-series="{escape(key)}">')
        out.append(f"<title>{escape(legend)}</title>")
        run = []
        for i, v in enumerate(vals + [None]):
            if finite(v):
                run.append(f"{x_at(i):.1f},{y_at(v):.1f}")
            elif run:
                out.append(
                    f'<polyline points="{" ".join(run)}" fill="none" stroke="{colour}" '
                    f'stroke-width="{2.5 if not dash else 2}"{dash_attr}/>'
                )
                run = []
        for i, v in enumerate(vals):
            if finite(v):
                out.append(
                    f'<circle cx="{x_at(i):.1f}" cy="{y_at(v):.1f}" r="{radius}" fill="{colour}">'
                    f"<title>{escape(legend)}, {escape(str(categories[i]))}: {fmt(v)}</title></circle>"
                )
        out.append("</g>")
    # Legend.
    lx, ly = LEFT + plot_w + 16, TOP + 8
    for n, (key, legend, colour, dash, radius, _) in enumerate(series):
        y = ly + n * 46
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<line x1="{lx}" y1="{y}" x2="{lx + 24}" y2="{y}" stroke="{colour}" stroke-width="2.5"{dash_attr}/>'
        )
        out.append(f'<circle cx="{lx + 12}" cy="{y}" r="{radius}" fill="{colour}"/>')
        words, lines = legend.split(" "), [""]
        for w in words:
            if len(lines[-1]) + len(w) > 22 and lines[-1]:
                lines.append("")
            lines[-1] = (lines[-1] + " " + w).strip()
        for j, text in enumerate(lines):
            out.append(f'<text x="{lx + 30}" y="{y + 4 + j * 14}" fill="#222222">{escape(text)}</text>')
    for j, text in enumerate(caption.split("\n")):
        out.append(
            f'<text x="{LEFT}" y="{HEIGHT - 26 + j * 14}" font-size="10.5" fill="#666666">{escape(text)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def caption_of(report, path, command):
    machine = report.get("machine", {})
    stamp = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc)
    return (
        f"{command}, {stamp:%d %b %Y %H:%M} UTC. Medians over rounds.\n"
        f"{machine.get('cpus', '?')} CPUs, load average {machine.get('loadavg_at_start', '?')} at start, "
        f"{report.get('loadavg_at_end', '?')} at end (a shared machine: the figures are noisy)."
    )


def load_charts(report, caption):
    """{file name: svg} for load.json: throughput and p99 for GET and POST."""
    rows = report.get("summary", {}).get("rows", [])
    charts = {}
    for method in ("GET", "POST"):
        mine = sorted((r for r in rows if r.get("method") == method), key=lambda r: r["conns"])
        if not mine:
            continue
        conns = [r["conns"] for r in mine]
        durable = " (durable writes)" if method == "POST" else ""
        for measure, field, label in (
            ("throughput", "rps", "requests per second"),
            ("p99", "p99_ms", "p99 latency (ms)"),
        ):
            series = [
                (key, legend, colour, dash, radius, [r.get(key, {}).get(field) for r in mine])
                for key, legend, colour, dash, radius in LOAD_SERIES
                if any(key in r for r in mine)
            ]
            title = f"{method}{durable}: {'throughput' if measure == 'throughput' else 'p99 latency'} against connections"
            charts[f"load-{method.lower()}-{measure}.svg"] = line_chart(
                title, label, "concurrent connections (wrk, one thread)", conns, series, caption
            )
    return charts


def signin_charts(report, caption):
    """{file name: svg} for signin.json: sign-ins/s and p99 beside the IdP alone."""
    rows = sorted(report.get("summary", {}).get("rows", []), key=lambda r: r["conns"])
    if not rows:
        return {}
    conns = [r["conns"] for r in rows]
    charts = {}
    for measure, field, label in (
        ("throughput", "rate", "sign-ins (round trips) per second"),
        ("p99", "p99_ms", "p99 latency (ms)"),
    ):
        series = [
            (key, legend, colour, dash, radius, [r.get(key, {}).get(field) for r in rows])
            for key, legend, colour, dash, radius in SIGNIN_SERIES
        ]
        title = f"Sign-in: {'throughput' if measure == 'throughput' else 'p99 latency'} against concurrent browsers"
        charts[f"signin-{measure}.svg"] = line_chart(
            title, label, "concurrent browsers", conns, series, caption
        )
    return charts


def generate(results, out):
    """Write every chart the results allow; returns the paths written."""
    written = []
    sources = (
        ("load.json", load_charts, "scripts/bench.sh load"),
        ("signin.json", signin_charts, "scripts/bench.sh signin"),
    )
    for name, make, command in sources:
        path = os.path.join(results, name)
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
        settings = report.get("settings", {})
        cmd = f"{command} --duration {settings.get('duration_secs', '?')} --rounds {settings.get('rounds', '?')}"
        charts = make(report, caption_of(report, path, cmd))
        os.makedirs(out, exist_ok=True)
        for file_name, svg in sorted(charts.items()):
            target = os.path.join(out, file_name)
            with open(target, "w", encoding="utf-8") as f:
                f.write(svg)
            written.append(target)
    return written


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="target/bench-results")
    parser.add_argument("--out", default=None, help="default: RESULTS/charts")
    args = parser.parse_args(argv)
    out = args.out or os.path.join(args.results, "charts")
    try:
        written = generate(args.results, out)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"bench_charts: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if not written:
        print(f"bench_charts: no load.json or signin.json in {args.results}", file=sys.stderr)
        return 1
    for w in written:
        print(f"   chart: {w}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
