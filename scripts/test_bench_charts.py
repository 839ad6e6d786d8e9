#!/usr/bin/env python3
"""Unit tests of scripts/bench_charts.py: every chart is well-formed SVG (parsed
by the standard library's XML parser), with one series per server holding the
run's values, and gaps where a value is missing.

    python3 scripts/test_bench_charts.py     (scripts/test.sh runs it)
"""

import json
import math
import os
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_charts  # noqa: E402

SVG = "{http://www.w3.org/2000/svg}"
CONNS = [1, 32, 256]


THREE = ("oidcvault", "http_ceiling", "storage_ceiling")


def load_report(nan_at=None, missing=float("nan"), targets=THREE):
    rows = []
    for method in ("GET", "POST"):
        for i, c in enumerate(CONNS):
            row = {"method": method, "conns": c}
            for j, t in enumerate(targets):
                rps = 1000.0 * (i + 1) * (j + 1)
                row[t] = {"rps": rps, "p50_ms": 0.1 * (i + 1), "p99_ms": 1.5 * (i + 1) + j}
            rows.append(row)
    if nan_at is not None:
        rows[nan_at]["oidcvault"]["rps"] = missing
    return {
        "benchmark": "load",
        "machine": {"cpus": 2, "loadavg_at_start": "1.0 <&> 2.0"},
        "loadavg_at_end": "3.0",
        "settings": {"duration_secs": 3, "rounds": 1},
        "summary": {"rows": rows},
    }


def signin_report():
    rows = [
        {"conns": c, "signin": {"rate": 100.0 * c, "p99_ms": 5.0}, "idp_only": {"rate": 300.0 * c, "p99_ms": 2.0}}
        for c in (1, 8, 32)
    ]
    return {"machine": {"cpus": 2}, "settings": {"duration_secs": 10, "rounds": 2}, "summary": {"rows": rows}}


class ChartTests(unittest.TestCase):
    def run_on(self, reports):
        d = tempfile.mkdtemp(prefix="bench-charts-")
        for name, report in reports.items():
            with open(os.path.join(d, name), "w") as f:
                # serde_json writes a NaN median as null; NaN is tested too.
                json.dump(report, f, allow_nan=True)
        out = os.path.join(d, "charts")
        written = bench_charts.generate(d, out)
        return {os.path.basename(p): ET.parse(p).getroot() for p in written}

    def series(self, root):
        return {g.get("data-series"): g for g in root.iter(SVG + "g") if g.get("class") == "series"}

    def test_load_charts_are_svg_with_one_series_per_server(self):
        charts = self.run_on({"load.json": load_report()})
        self.assertEqual(
            sorted(charts),
            ["load-get-p99.svg", "load-get-throughput.svg", "load-post-p99.svg", "load-post-throughput.svg"],
        )
        for name, root in charts.items():
            self.assertEqual(root.tag, SVG + "svg", name)
            series = self.series(root)
            self.assertEqual(sorted(series), ["http_ceiling", "oidcvault", "storage_ceiling"], name)
            for key, g in series.items():
                self.assertEqual(len(g.findall(SVG + "polyline")), 1, f"{name} {key}")
                points = g.find(SVG + "polyline").get("points").split()
                self.assertEqual(len(points), len(CONNS), f"{name} {key}")
                self.assertEqual(len(g.findall(SVG + "circle")), len(CONNS))
                # Points left to right, all inside the picture.
                xs = [float(p.split(",")[0]) for p in points]
                ys = [float(p.split(",")[1]) for p in points]
                self.assertEqual(xs, sorted(xs))
                self.assertTrue(all(0 <= y <= bench_charts.HEIGHT for y in ys), ys)
            # The caption (escaped text from the results) is there.
            text = "".join(root.itertext())
            self.assertIn("1.0 <&> 2.0", text)
            self.assertIn("noisy", text)

    def test_the_matched_baseline_is_drawn_when_measured(self):
        targets = THREE + ("matched_baseline",)
        charts = self.run_on({"load.json": load_report(targets=targets)})
        for name, root in charts.items():
            self.assertEqual(sorted(self.series(root)), sorted(targets), name)
            self.assertIn("matched baseline", "".join(root.itertext()), name)

    def test_the_compared_build_is_drawn_when_measured(self):
        targets = THREE + ("matched_baseline", "oidcvault_compare")
        charts = self.run_on({"load.json": load_report(targets=targets)})
        for name, root in charts.items():
            self.assertEqual(sorted(self.series(root)), sorted(targets), name)

    def test_larger_values_are_higher(self):
        root = self.run_on({"load.json": load_report()})["load-get-throughput.svg"]
        s = self.series(root)
        top = lambda key: float(s[key].find(SVG + "polyline").get("points").split()[-1].split(",")[1])
        # storage_ceiling has the largest rps, oidcvault the smallest (SVG y grows downwards).
        self.assertLess(top("storage_ceiling"), top("http_ceiling"))
        self.assertLess(top("http_ceiling"), top("oidcvault"))

    def test_a_missing_value_is_a_gap(self):
        for missing in (float("nan"), None):
            root = self.run_on({"load.json": load_report(nan_at=1, missing=missing)})["load-get-throughput.svg"]
            g = self.series(root)["oidcvault"]
            lines = g.findall(SVG + "polyline")
            self.assertEqual([len(p.get("points").split()) for p in lines], [1, 1], missing)
            self.assertEqual(len(g.findall(SVG + "circle")), 2)

    def test_signin_charts(self):
        charts = self.run_on({"load.json": load_report(), "signin.json": signin_report()})
        for name in ("signin-throughput.svg", "signin-p99.svg"):
            self.assertEqual(sorted(self.series(charts[name])), ["idp_only", "signin"], name)

    def test_no_results_is_an_error(self):
        d = tempfile.mkdtemp(prefix="bench-charts-")
        self.assertEqual(bench_charts.main(["--results", d]), 1)

    def test_nice_ceiling(self):
        self.assertEqual(bench_charts.nice_ceiling(93000), 100000)
        self.assertEqual(bench_charts.nice_ceiling(15.5), 20)
        self.assertEqual(bench_charts.nice_ceiling(0.72), 0.75)
        self.assertEqual(bench_charts.nice_ceiling(63023), 75000)
        self.assertEqual(bench_charts.nice_ceiling(2.1), 2.5)
        self.assertTrue(math.isfinite(bench_charts.nice_ceiling(float("nan"))))


if __name__ == "__main__":
    unittest.main()
