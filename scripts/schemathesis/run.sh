#!/usr/bin/env bash
# Spec-driven fuzzing: Schemathesis against the OpenAPI document served by the
# real binary, with real tokens, every operation, a fixed example budget.
#
#   bash scripts/schemathesis/run.sh [path/to/oidcvault]
#
# Starts the binary on 127.0.0.1 (a free port) with a temporary config and data
# directory, creates a domain token and an operator token with the CLI first,
# runs Schemathesis (installed into target/schemathesis-venv if missing), stops
# the server, and fails on any finding: a 5xx, a response that breaks the spec
# (status, content type, headers, body schema), accepted invalid or refused valid
# data, ignored auth, a bad 405, or a server that did not stop cleanly.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/scripts/schemathesis"
BIN="${1:-$ROOT/target/debug/oidcvault}"
ST_VERSION="4.32.5" # keep equal to install.sh
VENV="$ROOT/target/schemathesis-venv"
# Per operation; the phases are examples, coverage, fuzzing, stateful.
MAX_EXAMPLES="${OV_FUZZ_MAX_EXAMPLES:-150}"
# A fixed seed keeps CI reproducible; OV_FUZZ_SEED=$RANDOM explores further.
SEED="${OV_FUZZ_SEED:-20261129}"
# Reports of the last run (JUnit, NDJSON) are kept here.
REPORT="$ROOT/target/schemathesis-report"
rm -rf "$REPORT"

bash "$HERE/install.sh"
[ -x "$BIN" ] || { echo "schemathesis: no binary at $BIN (run cargo build first)" >&2; exit 1; }

WORK="$(mktemp -d -t oidcvault-fuzz-XXXXXX)"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/config.toml" <<TOML
[server]
bind = "127.0.0.1:0"
shutdown_timeout_secs = 5
# The sign-in broker starts sign-ins only with a public URL. Nothing follows the
# broker's redirects in this run: only the callback URL's form matters.
public_url = "http://127.0.0.1:8080"
[storage]
data_dir = "data"
cache_capacity_mib = 16
[security]
kdf_memory_kib = 19456
kdf_iterations = 2
kdf_parallelism = 1
[limits]
# The fuzzer sends invalid tokens on purpose (ignored_auth); do not throttle it.
auth_failures_per_window = 0
[outbound]
# The fuzzer posts URLs of arbitrary hosts: never look them up or call them.
enabled = false
resolve_discovery_on_save = false
[sso]
# /sso/authorize and /sso/callback count sign-ins per address; do not throttle
# the fuzzer (a 302 with temporarily_unavailable, or a 429 page, is all it would see).
authorize_per_address_per_minute = 0
TOML
for v in $(env | grep -o '^OIDCVAULT_[A-Z_]*' || true); do unset "$v"; done
export OIDCVAULT_MASTER_PASSPHRASE="schemathesis-run-passphrase"
ov() { "$BIN" --config "$WORK/config.toml" "$@"; }

# The OpenAPI examples name acme.com, so they exercise real paths.
DOMAIN_ID="$(ov domain add acme.com | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
DOMAIN_TOKEN="$(ov token create --domain acme.com)"
OPERATOR_TOKEN="$(ov token create --operator)"
TOKEN_IDS="$(ov token list | python3 -c 'import json,sys; print(",".join(str(t["id"]) for t in json.load(sys.stdin)))')"
# An application of the sign-in broker: /sso/token authenticates with its
# credentials (HTTP Basic), /sso/authorize names it, so both reach past the
# client check.
APP_REDIRECT_URI="http://127.0.0.1:9/callback"
APP_JSON="$(ov app add schemathesis --redirect-uri "$APP_REDIRECT_URI")"
app_field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$APP_JSON" "$1"; }
APP_ID="$(app_field id)"
APP_CLIENT_ID="$(app_field client_id)"
APP_BASIC="$(printf '%s:%s' "$APP_CLIENT_ID" "$(app_field client_secret)" | base64 -w0)"

"$BIN" --config "$WORK/config.toml" serve 2>"$WORK/server.log" &
SERVER_PID=$!
BASE=""
for _ in $(seq 1 300); do
    BASE="$(grep -o 'listening on http://[0-9.:]*' "$WORK/server.log" | head -1 | sed 's/listening on //' || true)"
    [ -n "$BASE" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log"; echo "schemathesis: the server exited" >&2; exit 1; }
    sleep 0.1
done
[ -n "$BASE" ] || { cat "$WORK/server.log"; echo "schemathesis: the server did not start" >&2; exit 1; }
# A configuration with an authorization endpoint, so the sign-in test can start
# one (the fuzzer may change or delete it later: hooks.py knows that answer).
python3 - "$BASE" "$DOMAIN_TOKEN" <<'PY'
import json, sys, urllib.request
base, token = sys.argv[1:]
body = {"client_id": "schemathesis", "client_secret": "schemathesis-client-secret",
        "authorization_endpoint": "https://idp.acme.com/authorize",
        "token_endpoint": "https://idp.acme.com/token"}
req = urllib.request.Request(base + "/api/v1/enterprises/oidc/config/", json.dumps(body).encode(),
    headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
urllib.request.urlopen(req)
PY
echo "== schemathesis $ST_VERSION against $BASE/api/v1/openapi.json (max $MAX_EXAMPLES examples per operation, seed $SEED)"

# Per-operation tokens: the domain token on the OIDC routes, the operator token
# everywhere else (schemathesis.toml reads them from the environment); whoami
# answers 200 to either, so it needs no token of its own.
export OV_DOMAIN_TOKEN="$DOMAIN_TOKEN" OV_OPERATOR_TOKEN="$OPERATOR_TOKEN"
export OV_PROTECTED_TOKEN_IDS="$TOKEN_IDS" OV_PROTECTED_DOMAIN_IDS="$DOMAIN_ID"
export OV_PROTECTED_APP_IDS="$APP_ID" OV_APP_BASIC="$APP_BASIC"
export OV_APP_CLIENT_ID="$APP_CLIENT_ID" OV_APP_REDIRECT_URI="$APP_REDIRECT_URI"
export OV_BASE_URL="$BASE"
set +e
(cd "$WORK" && SCHEMATHESIS_HOOKS="$HERE/hooks.py" "$VENV/bin/st" --config-file "$HERE/schemathesis.toml" run \
    "$BASE/api/v1/openapi.json" \
    --max-examples "$MAX_EXAMPLES" --seed "$SEED" \
    --report junit,ndjson --report-dir "$REPORT" \
    --no-color)
ST_STATUS=$?
set -e

# Real paths, not only 401s: the run's tokens must still work, and every
# operation must have answered 2xx at least once.
python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())' \
    "$BASE/api/v1/openapi.json" >"$REPORT/openapi.json"
python3 "$HERE/coverage.py" "$REPORT" "$REPORT/openapi.json" || ST_STATUS=1

# The run's own tokens and domain survived it (else it tested only 401s late on).
python3 - "$BASE" "$DOMAIN_TOKEN" "$OPERATOR_TOKEN" "$APP_BASIC" <<'PY' || ST_STATUS=1
import sys, urllib.error, urllib.request
base, domain_token, operator_token, app_basic = sys.argv[1:]
def status(path, authorization):
    data = b"grant_type=authorization_code" if path == "/sso/token" else None
    req = urllib.request.Request(base + path, data, headers={"Authorization": authorization,
        "Content-Type": "application/x-www-form-urlencoded"})
    try:
        return urllib.request.urlopen(req).status
    except urllib.error.HTTPError as e:
        return e.code
checks = [("/api/v1/enterprises/oidc/config/", "Bearer " + domain_token, (200, 404)),
          ("/api/v1/admin/domains/", "Bearer " + operator_token, (200,)),
          ("/api/v1/auth/whoami/", "Bearer " + domain_token, (200,)),
          # The application still authenticates: a 400 for the missing code, not a 401.
          ("/sso/token", "Basic " + app_basic, (400,))]
for path, token, ok in checks:
    got = status(path, token)
    print(f"after the run: {'POST' if path == '/sso/token' else 'GET'} {path} -> {got}")
    if got not in ok:
        print(f"schemathesis: the run's own token no longer works on {path} ({got})", file=sys.stderr)
        sys.exit(1)
PY

kill -TERM "$SERVER_PID"
SERVER_STATUS=0
wait "$SERVER_PID" || SERVER_STATUS=$?
SERVER_PID=""
if [ "$SERVER_STATUS" -ne 0 ]; then
    echo "schemathesis: the server did not stop cleanly (exit $SERVER_STATUS)" >&2
    ST_STATUS=1
fi
if grep -qiE 'panicked|internal error' "$WORK/server.log"; then
    echo "schemathesis: the server log shows a panic or an internal error:" >&2
    grep -iE 'panicked|internal error' "$WORK/server.log" | head -20 >&2
    ST_STATUS=1
fi
if [ "$ST_STATUS" -ne 0 ]; then
    echo "schemathesis: FAILED (seed $SEED; rerun with OV_FUZZ_SEED=$SEED)" >&2
    exit 1
fi
echo "schemathesis: passed (seed $SEED)"
