"""Schemathesis hooks for oidcvault's fuzz run (scripts/schemathesis/run.sh).

1. The run authenticates with real tokens. A generated `DELETE /admin/tokens/{id}/`
   or `DELETE /admin/domains/{id}/` could revoke those very tokens (or remove the
   domain the OIDC routes act on), and the rest of the run would see only 401s;
   `DELETE /admin/apps/{id}/` could remove the application the `/sso/` routes use.
   So a request naming one of the run's own ids is sent to an unused id instead;
   every other id goes out as generated.

2. A few answers are right by the contract (CONTRACT.md) although a JSON Schema
   cannot say so, because they depend on what is stored, not on the request
   alone. Each is dropped only when the answer is exactly the documented one:
   - `POST /admin/domains/` with a name that already exists: 400
     `{"domain": ["An enterprise domain with this name already exists."]}`;
   - `POST /admin/tokens/` for a well-formed name that is no domain: 400
     `{"domain": ["Enterprise domain not found."]}`;
   - `POST /enterprises/oidc/config/` is create-or-update: on update a field left
     out keeps its stored value, so a body missing `client_id` or `client_secret`
     (required on create) is accepted (200) when a configuration exists; and on
     create their absence is a 400 `"This field is required."`;
   - `client_secret` is limited to 4096 bytes of UTF-8, which `maxLength` (in
     characters) cannot state: a 400 saying so, for a secret over 4096 bytes.
   - a "created resource not found" (ST302) for a request that hook 1 sent to an
     unused id instead of one of the run's own;
   - `POST /enterprises/oidc/config/refresh/` (and `/test/`) take no body and act
     on the stored configuration: a 400 on `discovery_url` says the stored URL
     cannot be used (none set, not a discovery URL, or outbound disabled in this
     run), which no request could change;
   - a "created resource not found" (ST302) for `DELETE /admin/tokens/{id}/` of a
     token whose domain was removed after the token was created: removing a
     domain takes its tokens with it (the contract), which the audit trail shows.
   - the sign-in broker (`/sso/`, `sign-in-test`), whose answers depend on
     sign-ins in flight:
     - `GET /sso/callback` with a well-formed `state` that no sign-in holds (the
       fuzzer cannot know one): the 400 page "This sign-in is unknown or was
       already completed";
     - `POST /sso/token` with a well-formed code that no sign-in minted: 400
       `invalid_grant` "unknown code". And, since this run authenticates the
       application with HTTP Basic (schemathesis.toml), which a form schema
       cannot see: the 400 `invalid_request` for `client_secret` also in the
       body ("one method"), or a `client_id` in the body that is not the run's;
     - `GET /sso/authorize` (this run names its application and redirect URI):
       once the redirect URI is known good, a malformed parameter is refused
       the OAuth way (RFC 6749 §4.1.2.1), by a 302 back to that redirect URI
       with `error=invalid_request`, not by a 4xx: dropped when the answer is
       exactly that redirect;
     - `POST /enterprises/oidc/sign-in-test/`: the 400 `detail` saying the stored
       configuration has no authorization endpoint, discovery URL or token endpoint, or that
       there is none (the fuzzer's own config requests change or delete the one
       run.sh stored).
   Every other failure fails the run.
"""

import json
import os

import schemathesis


def _ids(name):
    return {int(x) for x in os.environ.get(name, "").split(",") if x.strip()}


PROTECTED = {
    "/api/v1/admin/tokens/{id}/": _ids("OV_PROTECTED_TOKEN_IDS"),
    "/api/v1/admin/domains/{id}/": _ids("OV_PROTECTED_DOMAIN_IDS"),
    "/api/v1/admin/apps/{id}/": _ids("OV_PROTECTED_APP_IDS"),
}


def _as_id(value):
    """The id the server reads (Rust's u64::from_str: "+1" and "01" are 1)."""
    text = str(value)
    try:
        return int(text, 10) if text == text.strip() and "_" not in text else None
    except ValueError:
        return None


# An id no resource has (the spec's maximum): a request that would have removed
# one of the run's own resources goes there instead, and gets its 404.
UNUSED_ID = "18446744073709551615"
# Cases sent to UNUSED_ID instead: their 404 is ours, not the API's.
REDIRECTED = set()


@schemathesis.hook
def before_call(context, case, kwargs):
    """Runs before every request of every phase (examples, coverage, fuzzing,
    stateful, and the extra requests of checks such as ignored_auth)."""
    protected = PROTECTED.get(case.operation.path, set())
    params = case.path_parameters or {}
    # This includes ids the stateful phase takes from the list answers (GET
    # /admin/domains/ lists the run's own domain too).
    if protected and "id" in params and _as_id(params["id"]) in protected:
        case.path_parameters = {**params, "id": UNUSED_ID}
        REDIRECTED.add(case.id)


def _body(response):
    try:
        return json.loads(response.content)
    except Exception:
        return None


def _audit_events():
    """Every audit event, oldest first, read with the run's operator token."""
    import urllib.request

    base = os.environ["OV_BASE_URL"]
    token = os.environ["OV_OPERATOR_TOKEN"]
    events, cursor = [], None
    for _ in range(1000):
        url = f"{base}/api/v1/admin/audit/?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            page = json.loads(r.read())
        events.extend(page["results"])
        cursor = page["next"]
        if not cursor:
            break
    return events


def _removed_with_its_domain(token_id):
    """True when the audit trail shows token `token_id` created for a domain that
    was removed afterwards (and so the token with it)."""
    if token_id is None:
        return False
    created = None
    for e in _audit_events():
        if e["action"] == "token.create" and e["detail"] in (f"token {token_id}",):
            created = e
        elif created and e["action"] == "domain.remove" and e["domain_id"] == created["domain_id"]:
            return True
    return False


def _html_reason(response):
    """The reason of one of the broker's error pages (`<p id="reason">`), or None."""
    if not response.headers.get("content-type", [""])[0].startswith("text/html"):
        return None
    text = response.content.decode("utf-8", "replace")
    start = text.find('<p id="reason">')
    end = text.find("</p>", start)
    if start < 0 or end < 0:
        return None
    return text[start + len('<p id="reason">') : end]


def _redirected_back_with(response, error):
    """True when `response` is a 302 to the run's application redirect URI with
    `error` (and nothing that looks like a code)."""
    from urllib.parse import parse_qs, urlsplit

    if response.status_code != 302:
        return False
    location = response.headers.get("location", [""])[0]
    base = os.environ.get("OV_APP_REDIRECT_URI", "")
    if not base or not location.startswith(base + "?"):
        return False
    query = parse_qs(urlsplit(location).query)
    return query.get("error") == [error] and "code" not in query


UNKNOWN_STATE = (
    "This sign-in is unknown or was already completed. Start again from the application."
)
NO_AUTHORIZATION_ENDPOINT = (
    "the enterprise domain's OIDC configuration has no authorization endpoint",
    "the enterprise domain has no OIDC configuration",
    # The fuzzer's own config writes may store one without a discovery URL.
    "the enterprise domain's OIDC configuration has no discovery_url (the broker "
    "needs the provider's issuer and keys)",
    "the enterprise domain's OIDC configuration has no token endpoint",
)


def _broker_state(code, label, case, response, body):
    """True for the broker's answers that only stored state (or the run's own
    HTTP Basic credentials) explains; see the module docstring."""
    status = response.status_code
    if code == "ST202" and label == "GET /sso/callback" and status == 400:
        return _html_reason(response) == UNKNOWN_STATE
    if code == "ST202" and label == "POST /sso/token" and status == 400:
        form = case.body if isinstance(case.body, dict) else {}
        if body == {"error": "invalid_grant", "error_description": "unknown code"}:
            return True
        if body == {
            "error": "invalid_request",
            "error_description": "use one client authentication method: HTTP Basic or the body, not both",
        }:
            return "client_secret" in form
        if body == {
            "error": "invalid_request",
            "error_description": "client_id does not match the credentials",
        }:
            return form.get("client_id") not in (None, os.environ.get("OV_APP_CLIENT_ID"))
    if code == "ST201" and label == "GET /sso/authorize":
        return _redirected_back_with(response, "invalid_request")
    if (
        code == "ST202"
        and label == "POST /api/v1/enterprises/oidc/sign-in-test/"
        and status == 400
        and isinstance(body, dict)
    ):
        return body.get("detail") in NO_AUTHORIZATION_ENDPOINT
    return False


REQUIRED = "This field is required."
SECRET_TOO_LONG = "Ensure this field has no more than 4096 bytes."


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """True keeps the failure; False drops it (see the module docstring)."""
    label = f"{case.operation.method.upper()} {case.operation.path}"
    code = getattr(failure, "code", None)
    body = _body(response)
    status = response.status_code
    if _broker_state(code, label, case, response, body):
        return False
    if code == "ST202" and status == 400 and isinstance(body, dict):
        if label == "POST /api/v1/admin/domains/" and body == {
            "domain": ["An enterprise domain with this name already exists."]
        }:
            return False
        if label == "POST /api/v1/admin/tokens/" and body == {
            "domain": ["Enterprise domain not found."]
        }:
            return False
        if label == "POST /api/v1/enterprises/oidc/config/" and body and all(
            k in ("client_id", "client_secret") and v == [REQUIRED] for k, v in body.items()
        ):
            return False
        # The limit is 4096 bytes of UTF-8; a JSON Schema counts characters.
        secret = case.body.get("client_secret") if isinstance(case.body, dict) else None
        if (
            label == "POST /api/v1/enterprises/oidc/config/"
            and body == {"client_secret": [SECRET_TOO_LONG]}
            and isinstance(secret, str)
            and len(secret.encode("utf-8", "surrogatepass")) > 4096
        ):
            return False
    if (
        code == "ST202"
        and status == 400
        and label
        in (
            "POST /api/v1/enterprises/oidc/config/refresh/",
            "POST /api/v1/enterprises/oidc/config/test/",
        )
        and isinstance(body, dict)
        and list(body) == ["discovery_url"]
    ):
        return False
    if code == "ST302" and case.id in REDIRECTED:
        return False
    if (
        code == "ST302"
        and label == "DELETE /api/v1/admin/tokens/{id}/"
        and status == 404
        and _removed_with_its_domain(_as_id((case.path_parameters or {}).get("id")))
    ):
        return False
    if (
        code == "ST201"
        and status == 200
        and label == "POST /api/v1/enterprises/oidc/config/"
        and (
            "Invalid component: Missing required property" in failure.message
            or "violates `required`" in failure.message
        )
    ):
        return False
    return True
