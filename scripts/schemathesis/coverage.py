"""Summarise a Schemathesis run from its NDJSON report, and fail unless it
exercised real paths: every operation of the spec answered 2xx at least once
(not only 401s or 404s), and no answer was a 5xx. Methods the spec does not
list (Schemathesis probes them for 405) are counted apart.

    python3 coverage.py REPORT_DIR OPENAPI_JSON
"""

import glob
import json
import sys
from collections import Counter, defaultdict


# Operations that cannot succeed in this run, with why (and where they do succeed).
NO_2XX_EXPECTED = {
    "POST /api/v1/enterprises/oidc/config/refresh/": (
        "needs a reachable OpenID Provider, and this run has outbound requests "
        "disabled; its 200 is tested against a real provider in tests/discovery.rs"
    ),
    "GET /sso/authorize": (
        "a browser route: it answers 302 (to the IdP, or back to the application with "
        "an error) or a 400 page, never 2xx; the redirects are checked in tests/sso/"
    ),
    "GET /sso/callback": (
        "its 200 is the \"Try sign-in\" result page, and every answer needs the state "
        "of a sign-in the IdP really returns: tests/sso/admin.rs "
        "(try_sign_in_shows_each_check_and_mints_no_code) and tests/sso/flow.rs"
    ),
    "POST /sso/token": (
        "its 200 needs a one-time code minted by a real sign-in at an IdP: "
        "tests/sso/flow.rs (a_sign_in_gives_the_application_a_verified_profile)"
    ),
}


def main(report_dir, spec_path):
    spec = json.load(open(spec_path, encoding="utf-8"))
    documented = {
        f"{method.upper()} {path}"
        for path, item in spec["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch", "head", "options", "trace")
    }
    files = sorted(glob.glob(f"{report_dir}/*.ndjson"))
    if not files:
        print(f"coverage: no NDJSON report in {report_dir}", file=sys.stderr)
        return 1
    operations = None
    for line in open(files[-1], encoding="utf-8"):
        (kind, data), = json.loads(line).items()
        if kind == "LoadingFinished":
            operations = data.get("statistic", {}).get("operations", {}).get("total")
    # Each response under the spec operation its case was generated for.
    statuses = defaultdict(Counter)
    for line in open(files[-1], encoding="utf-8"):
        (kind, data), = json.loads(line).items()
        if kind != "ScenarioFinished":
            continue
        recorder = data.get("recorder", {})
        cases = recorder.get("cases", {})
        for case_id, interaction in recorder.get("interactions", {}).items():
            response = interaction.get("response")
            case = cases.get(case_id, {}).get("value", {})
            if not response or not case:
                continue
            label = f"{case['method'].upper()} {case['path']}"
            statuses[label][response["status_code"]] += 1
    failed = False
    total = sum(sum(c.values()) for c in statuses.values())
    undocumented = Counter()
    for label in list(statuses):
        if label not in documented:
            undocumented.update(statuses.pop(label))
    print(
        f"coverage: {total} responses; {len(documented)} documented operations "
        f"(schemathesis loaded {operations}); undocumented methods answered "
        + " ".join(f"{s}:{n}" for s, n in sorted(undocumented.items()))
    )
    if any(s != 405 for s in undocumented):
        print("coverage: an undocumented method answered something else than 405", file=sys.stderr)
        failed = True
    for label in sorted(documented | set(statuses)):
        counts = statuses[label]
        if label == "GET /api/v1/openapi.json" and not counts:
            # Schemathesis does not test the document it loaded (with a 200).
            print(f"  ok  {label:45} (loaded the spec from it)")
            continue
        shown = " ".join(f"{s}:{n}" for s, n in sorted(counts.items()))
        ok = any(200 <= s < 300 for s in counts)
        server_error = any(s >= 500 for s in counts)
        mark = "ok " if ok and not server_error else "BAD"
        if not ok and not server_error and label in NO_2XX_EXPECTED and counts:
            print(f"  ok  {label:45} {shown} (no 2xx expected: {NO_2XX_EXPECTED[label]})")
            continue
        print(f"  {mark} {label:45} {shown}")
        if not ok:
            print(f"coverage: {label} never answered 2xx: only error paths were exercised", file=sys.stderr)
            failed = True
        if server_error:
            print(f"coverage: {label} answered 5xx", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
