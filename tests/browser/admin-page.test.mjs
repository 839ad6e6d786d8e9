// The admin page in headless Debian Chromium, driven by playwright-core, against the
// real oidcvault binary serving on loopback (a fresh home in a temporary folder).
//
// Run by scripts/test.sh (through `cargo test --test integration browser -- --ignored`,
// which builds the binary first), or alone, after a `cargo build`:
//
//   cd tests/browser && npm ci && npm test
//
// Environment: OIDCVAULT_BIN (default target/debug/oidcvault), CHROMIUM (default
// /usr/bin/chromium), OIDCVAULT_SCREENSHOTS (default target/browser-screenshots).
// Screenshots of each main screen are written there.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = process.env.OIDCVAULT_BIN || path.join(REPO, 'target', 'debug', 'oidcvault');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.OIDCVAULT_SCREENSHOTS || path.join(REPO, 'target', 'browser-screenshots');
const PASSPHRASE = 'browser-test passphrase 1';

// The seed's example values.
const CLIENT_ID = 'enterprise-app-123';
const CLIENT_SECRET = 's3cr3tP@ssw0rd!';
const MASKED = '********0rd!';

const CSP_DIRECTIVES = [
  "default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
  "img-src 'self'", "form-action 'none'", "base-uri 'none'", "frame-ancestors 'none'",
];

// ---- the real binary in a temporary home ------------------------------------------

const home = fs.mkdtempSync(path.join(os.tmpdir(), 'oidcvault-browser-'));
let server = null;
let serverLog = '';
let base = null; // http://127.0.0.1:PORT
let domainToken = null;
let operatorToken = null;

function childEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('OIDCVAULT_')) env[k] = v;
  }
  env.OIDCVAULT_MASTER_PASSPHRASE = PASSPHRASE;
  return env;
}

function oidcvault(...args) {
  const r = spawnSync(BIN, ['--config', path.join(home, 'config.toml'), ...args], {
    cwd: home, env: childEnv(), encoding: 'utf8', timeout: 60_000,
  });
  assert.equal(r.status, 0, `oidcvault ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout.trim();
}

function startServer() {
  return new Promise((resolve, reject) => {
    server = spawn(BIN, ['--config', path.join(home, 'config.toml'), 'serve'], {
      cwd: home, env: childEnv(), stdio: ['ignore', 'ignore', 'pipe'],
    });
    const timer = setTimeout(() => reject(new Error(`no "listening on" within 30 s:\n${serverLog}`)), 30_000);
    server.stderr.setEncoding('utf8');
    server.stderr.on('data', (chunk) => {
      serverLog += chunk;
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(serverLog);
      if (m && !base) {
        base = m[1];
        clearTimeout(timer);
        resolve();
      }
    });
    server.on('exit', (code, signal) => {
      if (!base) {
        clearTimeout(timer);
        reject(new Error(`the server exited (${code ?? signal}) before listening:\n${serverLog}`));
      }
    });
  });
}

/** The JSON API, from outside the browser, to check what the page did. */
async function apiCall(method, apiPath, token, { domain, body } = {}) {
  const headers = { Authorization: `Bearer ${token}` };
  if (domain) headers['X-Enterprise-Domain'] = domain;
  if (body) headers['Content-Type'] = 'application/json';
  const res = await fetch(base + apiPath, { method, headers, body: body && JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

// ---- the browser --------------------------------------------------------------------

let context = null;
let page = null;
let profile = null; // Chromium's profile folder
const requests = []; // every URL the page asked for
const problems = []; // CSP violations, Trusted Types errors, uncaught exceptions
const failedAnswers = []; // { step, what: 'METHOD /path STATUS' } of every 4xx/5xx the page got
let currentStep = null;
let shotCount = 0;

async function shot(name) {
  shotCount += 1;
  const file = path.join(SHOTS, `${String(shotCount).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

before(async () => {
  assert.ok(fs.existsSync(BIN), `no binary at ${BIN}: run cargo build first (or set OIDCVAULT_BIN)`);
  assert.ok(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install chromium chromium-driver`);
  fs.mkdirSync(SHOTS, { recursive: true });
  for (const f of fs.readdirSync(SHOTS)) if (f.endsWith('.png')) fs.rmSync(path.join(SHOTS, f));

  fs.writeFileSync(path.join(home, 'config.toml'), [
    '[server]', 'bind = "127.0.0.1:0"', 'shutdown_timeout_secs = 5', '',
    '[storage]', 'data_dir = "data"', 'cache_capacity_mib = 8', '',
    '[security]', 'kdf_memory_kib = 19456', 'kdf_iterations = 2', 'kdf_parallelism = 1', '',
    // The page is tested with discovery URLs of hosts that do not exist: never fetch.
    '[outbound]', 'enabled = false', 'resolve_discovery_on_save = false', '',
  ].join('\n'));
  oidcvault('domain', 'add', 'acme.com');
  domainToken = oidcvault('token', 'create', '--domain', 'acme.com');
  operatorToken = oidcvault('token', 'create', '--operator');
  await startServer();

  profile = fs.mkdtempSync(path.join(os.tmpdir(), 'oidcvault-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // Nothing beyond loopback: no name resolution (the page needs none), no
      // DNS-over-HTTPS probing, no prefetch.
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
      '--disable-features=AsyncDns,DnsOverHttps,MediaRouter,OptimizationHints,Translate',
      '--dns-prefetch-disable',
    ],
    viewport: { width: 1100, height: 900 },
    locale: 'en-US',
    timezoneId: 'UTC',
  });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  context.setDefaultTimeout(30_000); // generous: the machine may be busy
  context.on('request', (r) => requests.push(r.url()));
  page = context.pages()[0] || await context.newPage();
  page.on('console', (m) => {
    const text = m.text();
    if (/Content Security Policy|Refused to|Trusted Type|TrustedHTML/i.test(text)) {
      problems.push(`console ${m.type()}: ${text}`);
    }
  });
  page.on('pageerror', (e) => problems.push(`uncaught: ${e.message}`));
  page.on('response', (r) => {
    if (r.status() >= 400) {
      failedAnswers.push({ step: currentStep, what: `${r.request().method()} ${new URL(r.url()).pathname} ${r.status()}` });
    }
  });
});

after(async () => {
  if (context) await context.close().catch(() => {});
  if (server && server.exitCode === null) {
    server.kill('SIGTERM');
    await new Promise((r) => { server.once('exit', r); setTimeout(r, 10_000); });
  }
  fs.rmSync(home, { recursive: true, force: true });
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
});

// ---- helpers on the page --------------------------------------------------------------

const visible = (selector) => page.locator(selector).filter({ visible: true });

async function expectText(selector, pattern) {
  await page.waitForFunction(
    ([sel, source, flags]) => {
      const node = document.querySelector(sel);
      return node && new RegExp(source, flags).test(node.textContent);
    },
    [selector, pattern.source, pattern.flags],
  ).catch(async (e) => {
    const actual = await page.locator(selector).textContent().catch(() => '(missing)');
    throw new Error(`${selector} never matched ${pattern}; it reads ${JSON.stringify(actual)}\n${e.message}`);
  });
}

async function signIn(token) {
  await page.locator('#token').fill(token);
  await page.locator('#token').press('Enter'); // by keyboard
}

async function pageHasNoPlaintext(secret) {
  const html = await page.content();
  assert.ok(!html.includes(secret), 'the plaintext secret appears in the page');
  const values = await page.evaluate(() => [...document.querySelectorAll('input')].map((i) => i.value));
  assert.ok(!values.includes(secret), 'the plaintext secret is left in an input');
}

// ---- the scenario (steps in order, one browser) -----------------------------------------

// Each step builds on the one before: after a failure the rest are skipped, so the
// first failure is the one reported.
let broken = null;
function step(name, fn) {
  test(name, async (t) => {
    if (broken) {
      t.skip(`after the failure of "${broken}"`);
      return;
    }
    currentStep = name;
    try {
      await fn();
    } catch (e) {
      broken = name;
      await shot(`FAILED-${name.replace(/[^a-z0-9]+/gi, '-').slice(0, 50)}`).catch(() => {});
      throw e;
    }
  });
}

step('GET / is served with the strict policy and every control is labelled', async () => {
  const res = await page.goto(`${base}/`);
  assert.equal(res.status(), 200);
  const headers = res.headers();
  const csp = headers['content-security-policy'] || '';
  for (const d of CSP_DIRECTIVES) assert.ok(csp.split(';').map((x) => x.trim()).includes(d), `CSP lacks ${d}: ${csp}`);
  assert.equal(headers['x-frame-options'], 'DENY');
  assert.equal(headers['referrer-policy'], 'no-referrer');
  await visible('#sign-in-view').waitFor();
  const focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
  assert.equal(focused, 'token', 'the token field has the focus at start');
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea')]
    .filter((c) => c.labels.length === 0).map((c) => c.id || c.outerHTML));
  assert.deepEqual(unlabelled, [], 'controls without a label');
  await shot('sign-in');
});

const WRONG_TOKEN_STEP = 'a wrong token is refused beside the token field';
const DOMAIN_SIGN_IN_STEP = 'domain admin: sign in, save the seed values, see the masked secret';
const RELOAD_STEP = 'domain admin: a reload keeps the session and the stored values';
const OPERATOR_SIGN_IN_STEP = 'operator: sign in, list domains, add one (errors beside the field)';

step(WRONG_TOKEN_STEP, async () => {
  await signIn('ovt_999_not-a-real-token');
  await expectText('#token-error', /not accepted/);
  assert.equal(await page.locator('#token').getAttribute('aria-invalid'), 'true');
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'nothing stored for a refused token');
  assert.ok(await page.locator('#sign-in-view').isVisible());
});

step(DOMAIN_SIGN_IN_STEP, async () => {
  await signIn(domainToken);
  await visible('#config-form').waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('oidcvault.token')), domainToken);
  assert.equal(await page.evaluate(() => localStorage.length), 0, 'nothing in localStorage');
  assert.deepEqual(await context.cookies(), [], 'no cookies');
  await expectText('#session-role', /domain token/);
  assert.equal(await page.locator('#cfg-client_secret').getAttribute('placeholder'), 'required');
  assert.ok(!(await page.locator('#config-delete').isVisible()), 'nothing to delete yet');

  await page.locator('#cfg-client_id').fill(CLIENT_ID);
  await page.locator('#cfg-client_secret').fill(CLIENT_SECRET);
  await page.locator('#config-save').click();
  await expectText('#notice', /Created\. The client secret is stored as \*{8}0rd!/);
  await expectText('#secret-masked', /^\*{8}0rd!$/);
  assert.equal(await page.locator('#cfg-client_secret').inputValue(), '', 'the secret field is emptied after a save');
  assert.equal(await page.locator('#cfg-client_secret').getAttribute('placeholder'), 'unchanged');
  await pageHasNoPlaintext(CLIENT_SECRET);
  const stored = await apiCall('GET', '/api/v1/enterprises/oidc/config/', domainToken);
  assert.equal(stored.status, 200);
  assert.equal(stored.body.client_id, CLIENT_ID);
  assert.equal(stored.body.client_secret_masked, MASKED);
  await shot('domain-config-saved');
});

step('domain admin: a bad URL is shown beside its field, then fixed', async () => {
  await page.locator('#cfg-discovery_url').fill('http://idp.example.com/.well-known/openid-configuration');
  await page.locator('#config-save').click();
  await expectText('#cfg-discovery_url-error', /\S/);
  await expectText('#alert', /^Not saved: check Discovery URL\.$/);
  assert.equal(await page.locator('#cfg-discovery_url').getAttribute('aria-invalid'), 'true');
  const focused = await page.evaluate(() => document.activeElement.id);
  assert.equal(focused, 'cfg-discovery_url', 'the field at fault gets the focus');
  for (const other of ['client_id', 'client_secret', 'token_endpoint']) {
    assert.equal(await page.locator(`#cfg-${other}-error`).textContent(), '', `no error beside ${other}`);
  }
  // The error is announced beside the field, inside the same .field as its input.
  const beside = await page.evaluate(() => {
    const input = document.getElementById('cfg-discovery_url');
    const error = document.getElementById('cfg-discovery_url-error');
    return input.parentElement === error.parentElement
      && input.getAttribute('aria-describedby').split(' ').includes(error.id);
  });
  assert.ok(beside, 'the error sits beside its field and describes it');
  await shot('domain-config-field-error');

  await page.locator('#cfg-discovery_url').fill('https://idp.example.com/.well-known/openid-configuration');
  await page.locator('#cfg-token_endpoint').fill('https://idp.example.com/oauth2/token');
  await page.locator('#config-save').click();
  // The stored secret is bound to where it was written for (no token endpoint
  // then): pointing the endpoints somewhere needs the secret in the same save,
  // and the page says so beside the secret field (issue 11).
  await expectText('#cfg-client_secret-error', /client secret is bound to none/);
  await expectText('#alert', /^Not saved: check Client secret\.$/);
  await page.locator('#cfg-client_secret').fill(CLIENT_SECRET);
  await page.locator('#config-save').click();
  await expectText('#notice', /^Saved\./);
  assert.equal(await page.locator('#cfg-client_secret-error').textContent(), '');
  assert.equal(await page.locator('#cfg-discovery_url-error').textContent(), '');
  assert.equal(await page.locator('#cfg-discovery_url').getAttribute('aria-invalid'), null);
  assert.equal(await page.locator('#alert').textContent(), '');
});

step(RELOAD_STEP, async () => {
  await page.reload();
  await visible('#config-form').waitFor();
  await expectText('#secret-masked', /^\*{8}0rd!$/);
  assert.equal(await page.locator('#cfg-client_id').inputValue(), CLIENT_ID);
  assert.equal(await page.locator('#cfg-discovery_url').inputValue(),
    'https://idp.example.com/.well-known/openid-configuration');
  assert.equal(await page.locator('#cfg-token_endpoint').inputValue(), 'https://idp.example.com/oauth2/token');
  assert.equal(await page.locator('#cfg-authorization_endpoint').inputValue(), '');
  assert.equal(await page.locator('#cfg-client_secret').inputValue(), '');
  // Saves without typing a secret kept it.
  const stored = await apiCall('GET', '/api/v1/enterprises/oidc/config/', domainToken);
  assert.equal(stored.body.client_secret_masked, MASKED);
  await shot('domain-config-after-reload');
});

step('domain admin: the secret is replaced only through its write-only field', async () => {
  const replacement = 'n3w-s3cr3t-v4lue!';
  await page.locator('#cfg-client_secret').fill(replacement);
  await page.locator('#config-save').click();
  await expectText('#secret-masked', /^\*{8}lue!$/);
  assert.equal(await page.locator('#cfg-client_secret').inputValue(), '');
  await pageHasNoPlaintext(replacement);
  const stored = await apiCall('GET', '/api/v1/enterprises/oidc/config/', domainToken);
  assert.equal(stored.body.client_secret_masked, '********lue!');
});

step('domain admin: test connection and refresh report each step', async () => {
  // This server has outbound requests disabled: every fetch is refused, and
  // the page must show that step by step, as a failure, not as a crash.
  await visible('#provider-card').waitFor();
  await page.locator('#config-test').click();
  await expectText('#test-summary', /Connection test failed/);
  await expectText('#test-steps', /failed/);
  await expectText('#alert', /Connection test failed/);
  await shot('domain-connection-test');
  // Refresh cannot fetch the stored discovery URL here: said beside that field.
  await page.locator('#config-refresh').click();
  await expectText('#cfg-discovery_url-error', /discovery document could not be fetched.*outbound/i);
  await expectText('#alert', /Not refreshed/);
});

step('domain admin: without server.public_url there is no callback URL, and Try sign-in says why', async () => {
  // This server has no public_url: the page says which setting is missing.
  await expectText('#callback-missing', /server\.public_url/);
  assert.ok(await page.locator('#callback-missing').isVisible());
  assert.ok(!(await page.locator('#callback-row').isVisible()), 'no callback URL shown');
  const sso = await apiCall('GET', '/api/v1/sso/', domainToken);
  assert.equal(sso.status, 200);
  assert.deepEqual(sso.body, { public_url: null, callback_url: null });
  const pagesBefore = context.pages().length;
  await page.locator('#try-sign-in').click();
  await expectText('#alert', /^Sign-in test not started: .*server\.public_url/);
  assert.equal(context.pages().length, pagesBefore, 'no tab opened');
  assert.ok(!(await page.locator('#try-link').isVisible()));
  await shot('domain-no-public-url');
});

step('domain admin: delete asks for confirmation (cancel and Escape keep it)', async () => {
  await page.locator('#config-delete').click();
  await visible('#confirm').waitFor();
  await expectText('#confirm-title', /Delete the configuration\?/);
  await page.locator('#confirm-cancel').click();
  assert.ok(!(await page.locator('#confirm').isVisible()));
  await page.locator('#config-delete').click();
  await visible('#confirm').waitFor();
  await page.keyboard.press('Escape');
  await page.locator('#confirm').waitFor({ state: 'hidden' });
  const stored = await apiCall('GET', '/api/v1/enterprises/oidc/config/', domainToken);
  assert.equal(stored.status, 200, 'still configured after cancelling');
});

step('sign out removes the token from the tab', async () => {
  await page.locator('#sign-out').click();
  await visible('#sign-in-view').waitFor();
  await expectText('#notice', /Signed out/);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  await page.reload();
  await visible('#sign-in-view').waitFor();
});

step(OPERATOR_SIGN_IN_STEP, async () => {
  await signIn(operatorToken);
  await visible('#operator-view').waitFor();
  await expectText('#session-role', /operator token/);
  await expectText('#domain-list', /acme\.com/);
  await expectText('#token-list', /this session/);

  await page.locator('#new-domain').fill('not a domain!');
  await page.locator('#add-domain-form button[type=submit]').click();
  await expectText('#new-domain-error', /\S/);
  await expectText('#alert', /Domain not added/);
  await page.locator('#new-domain').fill('acme.com');
  await page.locator('#add-domain-form button[type=submit]').click();
  await expectText('#new-domain-error', /\S/); // a duplicate

  await page.locator('#new-domain').fill('globex.example');
  await page.locator('#add-domain-form button[type=submit]').click();
  await expectText('#notice', /Domain globex\.example added/);
  await expectText('#domain-list', /globex\.example/);
  assert.equal(await page.locator('#new-domain-error').textContent(), '');
  const list = await apiCall('GET', '/api/v1/admin/domains/', operatorToken);
  assert.deepEqual(list.body.map((d) => d.domain).sort(), ['acme.com', 'globex.example']);
  await shot('operator-domains-and-tokens');
});

step('operator: edit a domain\'s configuration (sent with X-Enterprise-Domain), then delete it', async () => {
  const sentHeaders = [];
  const onRequest = (r) => {
    if (r.url().includes('/enterprises/oidc/config/')) sentHeaders.push(r.headers()['x-enterprise-domain']);
  };
  page.on('request', onRequest);
  await page.getByRole('link', { name: 'Configure single sign-on for globex.example' }).click();
  await visible('#config-form').waitFor();
  await expectText('#config-title', /Single sign-on for globex\.example/);
  await page.locator('#cfg-client_id').fill('globex-app');
  await page.locator('#cfg-client_secret').fill('globex-secret-123456');
  await page.locator('#config-save').click();
  await expectText('#secret-masked', /^\*{8}3456$/);
  await shot('operator-domain-config');
  page.off('request', onRequest);
  assert.ok(sentHeaders.length >= 2 && sentHeaders.every((h) => h === 'globex.example'), `X-Enterprise-Domain: ${sentHeaders}`);
  const globex = await apiCall('GET', '/api/v1/enterprises/oidc/config/', operatorToken, { domain: 'globex.example' });
  assert.equal(globex.body.client_id, 'globex-app');
  const acme = await apiCall('GET', '/api/v1/enterprises/oidc/config/', domainToken);
  assert.equal(acme.body.client_id, CLIENT_ID, 'acme.com untouched');

  await page.locator('#config-delete').click();
  await visible('#confirm').waitFor();
  await page.locator('#confirm-ok').click();
  await expectText('#notice', /Configuration deleted/);
  const gone = await apiCall('GET', '/api/v1/enterprises/oidc/config/', operatorToken, { domain: 'globex.example' });
  assert.equal(gone.status, 404);
  assert.equal(await page.locator('#cfg-client_secret').getAttribute('placeholder'), 'required');

  await page.locator('#back-to-domains').click();
  await visible('#operator-view').waitFor();
});

step('operator: create a token (shown once, copyable), then revoke it', async () => {
  await page.locator('#token-target').selectOption('domain:globex.example');
  await page.locator('#create-token-form button[type=submit]').click();
  await visible('#new-token').waitFor();
  const token = await page.locator('#new-token-value').inputValue();
  assert.match(token, /^ovt_\d+_\S+$/);
  await expectText('#new-token-warning', /only time it is shown/);
  await expectText('#notice', /created for domain globex\.example/);
  await shot('operator-new-token');
  // The token works, for its domain.
  const works = await apiCall('GET', '/api/v1/enterprises/oidc/config/', token);
  assert.equal(works.status, 404, 'a valid token for a domain without a config');
  // Copy button.
  await page.locator('#copy-token').click();
  await expectText('#notice', /copied/);
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), token);
  // Done hides it for good.
  await page.locator('#new-token-done').click();
  assert.ok(!(await page.locator('#new-token').isVisible()));
  assert.equal(await page.locator('#new-token-value').inputValue(), '');
  assert.ok(!(await page.content()).includes(token), 'the token is gone from the page');

  const id = Number(/^ovt_(\d+)_/.exec(token)[1]);
  await page.getByRole('button', { name: `Revoke token #${id} (Domain globex.example)` }).click();
  await visible('#confirm').waitFor();
  await expectText('#confirm-title', new RegExp(`Revoke token #${id}\\?`));
  await page.locator('#confirm-ok').click();
  await expectText('#notice', new RegExp(`Token #${id} revoked`));
  assert.ok(!(await page.locator('#token-list').textContent()).includes(`Token #${id} `));
  const revoked = await apiCall('GET', '/api/v1/enterprises/oidc/config/', token);
  assert.equal(revoked.status, 401, 'the revoked token no longer works');
});

const APP_STEP = 'operator: add an application (errors beside the fields, secret shown once), then remove it';

step(APP_STEP, async () => {
  await expectText('#apps-title', /Applications/);
  await visible('#apps-empty').waitFor();
  // http is for loopback hosts only: refused beside the redirect URIs.
  await page.locator('#new-app-name').fill('Example app');
  await page.locator('#new-app-redirect_uris').fill('http://app.example.com/callback');
  await page.locator('#add-app-form button[type=submit]').click();
  await expectText('#new-app-redirect_uris-error', /\S/);
  await expectText('#alert', /^Application not added: check Redirect URIs\./);
  assert.equal(await page.locator('#new-app-redirect_uris').getAttribute('aria-invalid'), 'true');
  assert.equal(await page.locator('#new-app-name-error').textContent(), '');

  const uris = ['https://app.example.com/sso/callback', 'http://127.0.0.1:8765/callback'];
  await page.locator('#new-app-redirect_uris').fill(uris.join('\n'));
  await page.locator('#add-app-form button[type=submit]').click();
  await visible('#new-app').waitFor();
  await expectText('#notice', /Application Example app added/);
  await expectText('#new-app-warning', /only time it is shown/);
  const clientId = await page.locator('#new-app-client_id').inputValue();
  const secret = await page.locator('#new-app-client_secret').inputValue();
  assert.match(clientId, /^ova_[A-Za-z0-9_-]{16,}$/);
  assert.match(secret, /^ovs_[A-Za-z0-9_-]{32,}$/);
  assert.equal(await page.locator('#new-app-redirect_uris').inputValue(), '', 'the form is emptied');
  await expectText('#app-list', /Example app/);
  for (const u of uris) await expectText('#app-list', new RegExp(u.replace(/[.?/]/g, '\\$&')));
  await shot('operator-new-application');
  // The pair works at the broker's token endpoint (the code is unknown:
  // invalid_grant, not invalid_client); a wrong secret is invalid_client.
  const tokenCall = async (pass) => {
    const res = await fetch(`${base}/sso/token`, {
      method: 'POST',
      headers: {
        Authorization: `Basic ${Buffer.from(`${clientId}:${pass}`).toString('base64')}`,
        'Content-Type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: 'not-a-code', redirect_uri: uris[0] }),
    });
    return { status: res.status, body: await res.json() };
  };
  assert.deepEqual([(await tokenCall(secret)).body.error, (await tokenCall(`${secret}x`)).status], ['invalid_grant', 401]);
  await page.locator('#copy-app-secret').click();
  await expectText('#notice', /copied/);
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);
  await page.locator('#new-app-done').click();
  assert.ok(!(await page.locator('#new-app').isVisible()));
  assert.ok(!(await page.content()).includes(secret), 'the client secret is gone from the page');
  const listed = await apiCall('GET', '/api/v1/admin/apps/', operatorToken);
  assert.equal(listed.status, 200);
  assert.equal(listed.body.length, 1);
  assert.equal(listed.body[0].client_id, clientId);
  assert.deepEqual(listed.body[0].redirect_uris, uris);
  assert.ok(!JSON.stringify(listed.body).includes(secret) && !('client_secret' in listed.body[0]), 'no secret in the list');

  await page.getByRole('button', { name: 'Remove application Example app' }).click();
  await visible('#confirm').waitFor();
  await expectText('#confirm-title', /Remove application Example app\?/);
  await page.locator('#confirm-ok').click();
  await expectText('#notice', /Application Example app removed/);
  await visible('#apps-empty').waitFor();
  const after = await apiCall('GET', '/api/v1/admin/apps/', operatorToken);
  assert.deepEqual(after.body, []);
});

step('operator: remove a domain with confirmation', async () => {
  await page.getByRole('button', { name: 'Remove globex.example' }).click();
  await visible('#confirm').waitFor();
  await page.locator('#confirm-ok').click();
  await expectText('#notice', /Domain globex\.example removed/);
  const list = await apiCall('GET', '/api/v1/admin/domains/', operatorToken);
  assert.deepEqual(list.body.map((d) => d.domain), ['acme.com']);
});

// ---- the operator's views: audit trail and key terms ----------------------------------

const AUDIT_PATH = '/api/v1/admin/audit/';
const operatorId = () => Number(/^ovt_(\d+)_/.exec(operatorToken)[1]);

/** Every event of the trail matching `query`, from the API (following `next`). */
async function auditAll(query = '') {
  const out = [];
  let cursor = null;
  for (let i = 0; i < 50; i += 1) {
    const res = await apiCall('GET', `${AUDIT_PATH}?limit=1000${query ? `&${query}` : ''}${cursor ? `&cursor=${cursor}` : ''}`, operatorToken);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    out.push(...res.body.results);
    if (!res.body.next) return out;
    cursor = res.body.next;
  }
  throw new Error('the audit trail did not end');
}

/** The rows of the audit table as the page shows them: one object per row. */
async function auditRows() {
  return page.$$eval('#audit-rows tr', (rows) => rows.map((r) => ({
    id: Number(r.dataset.eventId),
    at: r.cells[0].querySelector('time').getAttribute('datetime'),
    actor: r.cells[1].textContent,
    action: r.cells[2].textContent,
    domain: r.cells[3].textContent,
    fields: r.cells[4].textContent,
    fingerprint: r.cells[5].textContent,
    detail: r.cells[6].textContent,
  })));
}

/** What a row shows for an event of the API. */
const rowOf = (e) => ({
  id: e.id,
  at: e.at,
  actor: e.actor === null ? 'no token' : `token #${e.actor}`,
  action: e.action,
  domain: e.domain || (e.domain_id === null ? '—' : `id ${e.domain_id}`),
  fields: e.fields.length ? e.fields.join(', ') : '—',
  fingerprint: e.secret_fingerprint || '—',
  detail: e.detail || '',
});

/** Submit the audit filters and wait for the answer to be shown. */
async function filterAudit({ domain = '', action = '', since = '', until = '', limit = '100' } = {}) {
  await page.locator('#audit-domain').fill(domain);
  await page.locator('#audit-action').fill(action);
  await page.locator('#audit-since').fill(since);
  await page.locator('#audit-until').fill(until);
  await page.locator('#audit-limit').selectOption(limit);
  const answered = page.waitForResponse((r) => r.url().includes(AUDIT_PATH));
  await page.locator('#audit-apply').click();
  const res = await answered;
  await page.waitForFunction(() => document.getElementById('audit-form').getAttribute('aria-busy') === null);
  return new URL(res.url());
}

const AUDIT_FILTER_STEP = 'operator: filter the audit trail by domain, action and time, page it with a small limit';
const SECRETS_SEEN = () => [CLIENT_SECRET, 'n3w-s3cr3t-v4lue!', 'globex-secret-123456', domainToken, operatorToken];

step('operator: the audit trail shows the events the scenario caused, with each event\'s fields', async () => {
  await page.getByRole('link', { name: 'Audit trail' }).click();
  await visible('#audit-view').waitFor();
  await expectText('#audit-summary', /Page 1: \d+ events/);
  assert.equal(await page.locator('#nav-audit').getAttribute('aria-current'), 'page');
  const events = await auditAll();
  assert.ok(events.length > 10 && events.length <= 100, `${events.length} events`);
  assert.deepEqual(await auditRows(), events.map(rowOf), 'the table shows every event, field by field');
  // What the scenario did is there, by whom.
  const actions = events.map((e) => `${e.action} ${e.domain ?? ''}`.trim());
  for (const a of ['domain.add acme.com', 'config.create acme.com', 'config.update acme.com',
    'domain.add globex.example', 'config.create globex.example', 'config.delete globex.example',
    'token.create globex.example', 'token.revoke globex.example', 'app.create', 'app.remove',
    'domain.remove globex.example']) {
    assert.ok(actions.includes(a), `no "${a}" in ${JSON.stringify(actions)}`);
  }
  const rows = await auditRows();
  const added = rows.find((r) => r.action === 'domain.add' && r.domain === 'globex.example');
  assert.equal(added.actor, `token #${operatorId()}`, 'the page\'s operator is the actor');
  assert.equal(rows.find((r) => r.action === 'domain.add' && r.domain === 'acme.com').actor, 'no token', 'the command line has no token');
  const created = rows.find((r) => r.action === 'config.create' && r.domain === 'acme.com');
  assert.equal(created.fields, 'client_id, client_secret');
  assert.match(created.fingerprint, /\S{8,}/, 'a secret change shows its fingerprint');
  for (const secret of SECRETS_SEEN()) await pageHasNoPlaintext(secret);
  await shot('operator-audit-trail');
});

step(AUDIT_FILTER_STEP, async () => {
  // By domain.
  let sent = await filterAudit({ domain: 'globex.example' });
  assert.equal(sent.searchParams.get('domain'), 'globex.example');
  const globex = await auditAll('domain=globex.example');
  assert.deepEqual(await auditRows(), globex.map(rowOf));
  assert.ok(globex.length >= 5 && globex.every((e) => e.domain === 'globex.example'));
  // By domain and a family of actions.
  sent = await filterAudit({ domain: 'globex.example', action: 'config.' });
  assert.equal(sent.searchParams.get('action'), 'config.');
  assert.deepEqual((await auditRows()).map((r) => r.action), ['config.create', 'config.delete']);
  await expectText('#audit-summary', /Page 1: 2 events.*domain globex\.example, action config\./);
  await shot('operator-audit-filtered');
  // By one exact action, any domain.
  await filterAudit({ action: 'token.create' });
  const tokenEvents = await auditAll('action=token.create');
  assert.deepEqual(await auditRows(), tokenEvents.map(rowOf));
  assert.ok(tokenEvents.length >= 3 && tokenEvents.every((e) => e.action === 'token.create'));
  // A malformed action: said beside the field, nothing else changes.
  await filterAudit({ action: 'Config*' });
  await expectText('#audit-action-error', /prefix ending in a dot/);
  await expectText('#alert', /^Not filtered: check Action\.$/);
  assert.equal(await page.locator('#audit-action').getAttribute('aria-invalid'), 'true');
  assert.deepEqual((await auditRows()).map((r) => r.action), tokenEvents.map((e) => e.action), 'the last good page stays');
  // By time: nothing from a minute ahead on; everything between a minute before
  // the first event and a minute ahead (datetime-local, in the browser's zone: UTC).
  const all = await auditAll();
  const local = (ms) => new Date(ms).toISOString().slice(0, 19);
  sent = await filterAudit({ since: local(Date.now() + 60_000) });
  assert.match(sent.searchParams.get('since'), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$/);
  await expectText('#audit-summary', /^No events match these filters\.$/);
  assert.ok(await page.locator('#audit-table').isHidden());
  await filterAudit({ since: local(Date.parse(all[0].at) - 60_000), until: local(Date.now() + 60_000) });
  assert.equal((await auditRows()).length, all.length);
  const middle = all[Math.floor(all.length / 2)];
  await filterAudit({ until: local(Date.parse(middle.at) - 1000) });
  assert.ok((await auditRows()).every((r) => Date.parse(r.at) < Date.parse(middle.at)), 'until is exclusive');
  // Paged 10 at a time, forward to the end and back.
  await filterAudit({ limit: '10' });
  const seen = [];
  const pages = [];
  for (let n = 1; n <= 20; n += 1) {
    const rows = await auditRows();
    assert.ok(rows.length >= 1 && rows.length <= 10, `page ${n}: ${rows.length} rows`);
    await expectText('#audit-summary', new RegExp(`^Page ${n}: `));
    pages.push(rows.map((r) => r.id));
    seen.push(...rows.map((r) => r.id));
    if (await page.locator('#audit-next').isDisabled()) break;
    const answered = page.waitForResponse((r) => r.url().includes(AUDIT_PATH));
    await page.locator('#audit-next').click();
    const url = new URL((await answered).url());
    assert.equal(url.searchParams.get('cursor'), String(rows[rows.length - 1].id), 'the next page by the cursor');
    assert.equal(url.searchParams.get('limit'), '10');
    await page.waitForFunction((last) => {
      const first = document.querySelector('#audit-rows tr');
      return first && Number(first.dataset.eventId) > last;
    }, rows[rows.length - 1].id);
  }
  assert.deepEqual(seen, all.map((e) => e.id), 'the pages hold every event once, in order');
  assert.ok(pages.length >= 2, `${pages.length} pages`);
  assert.ok(await page.locator('#audit-prev').isEnabled());
  await page.locator('#audit-prev').click();
  await expectText('#audit-summary', new RegExp(`^Page ${pages.length - 1}: 10 events`));
  assert.deepEqual((await auditRows()).map((r) => r.id), pages[pages.length - 2], 'back to the page before');
  await shot('operator-audit-paged');
  for (const secret of SECRETS_SEEN()) await pageHasNoPlaintext(secret);
});

step('operator: the key terms; Rotate now (confirmed) moves to a new term and re-encryption reaches 100 %', async () => {
  await page.getByRole('link', { name: 'Key terms' }).click();
  await visible('#keys-view').waitFor();
  const before = await apiCall('GET', '/api/v1/admin/keys/', operatorToken);
  const term = before.body.active_term;
  await expectText('#keys-summary', new RegExp(`^Term ${term} is active`));
  await expectText('#keys-summary', new RegExp(`${before.body.total_configs} stored configuration`));
  await expectText('#keys-progress-text', new RegExp(`^100 % under term ${term}: re-encryption complete`));
  assert.deepEqual(await page.$$eval('#keys-rows tr', (rows) => rows.map((r) => r.dataset.term)), [String(term)]);
  await shot('operator-keys');

  // Cancel keeps the term.
  await page.locator('#keys-rotate').click();
  await visible('#confirm').waitFor();
  await expectText('#confirm-title', /Rotate the data key now\?/);
  await page.locator('#confirm-cancel').click();
  assert.equal((await apiCall('GET', '/api/v1/admin/keys/', operatorToken)).body.active_term, term, 'cancelled: no rotation');

  // Confirmed: the new term at once, then the progress polled to 100 %.
  const polls = [];
  const onResponse = (r) => { if (r.url().endsWith('/api/v1/admin/keys/')) polls.push(r.url()); };
  page.on('response', onResponse);
  // Every progress line the page shows, from the rotation to the end.
  await page.evaluate(() => {
    window.progressSeen = [];
    const line = document.getElementById('keys-progress-text');
    new MutationObserver(() => window.progressSeen.push(line.textContent))
      .observe(line, { childList: true, characterData: true, subtree: true });
  });
  await page.locator('#keys-rotate').click();
  await visible('#confirm').waitFor();
  await page.locator('#confirm-ok').click();
  await expectText('#notice', new RegExp(`Rotated: term ${term + 1} is active|Re-encryption complete`));
  await expectText('#keys-summary', new RegExp(`^Term ${term + 1} is active`));
  await expectText('#keys-progress-text', new RegExp(`^100 % under term ${term + 1}: re-encryption complete`));
  await expectText('#notice', new RegExp(`Re-encryption complete: every configuration is under term ${term + 1}`));
  page.off('response', onResponse);
  assert.ok(polls.length >= 1, 'the page asked for the progress after the rotation');
  // The new term's progress, never going back, until complete.
  const seen = await page.evaluate(() => window.progressSeen);
  const percents = seen.map((t) => Number(/^(\d+) % /.exec(t)[1]));
  assert.ok(seen.every((t) => t.includes(`under term ${term + 1}`)), JSON.stringify(seen));
  assert.deepEqual(percents, [...percents].sort((a, b) => a - b), `progress went back: ${JSON.stringify(seen)}`);
  assert.match(seen[seen.length - 1], /^100 % under term \d+: re-encryption complete/);
  process.stdout.write(`# re-encryption progress as shown: ${JSON.stringify(seen)}\n`);
  assert.equal(await page.locator('#keys-progress').evaluate((p) => p.value), 100);
  assert.deepEqual(await page.$$eval('#keys-rows tr', (rows) => rows.map((r) => r.dataset.term)), [String(term + 1)]);
  const after = await apiCall('GET', '/api/v1/admin/keys/', operatorToken);
  assert.equal(after.body.active_term, term + 1);
  assert.equal(after.body.progress, 1);
  assert.equal(after.body.reencryption_pending, false);
  assert.deepEqual(after.body.terms.map((t) => t.term), [term + 1]);
  // Polling stops once done.
  const settled = polls.length;
  await page.waitForTimeout(1200);
  assert.equal(polls.length, settled, 'no more polls after 100 %');
  // The stored secret survived its re-encryption.
  const acme = await apiCall('GET', '/api/v1/enterprises/oidc/config/', domainToken);
  assert.equal(acme.body.client_secret_masked, '********lue!');
  await shot('operator-keys-rotated');

  // The rotation is in the trail, by this operator.
  await page.getByRole('link', { name: 'Audit trail' }).click();
  await visible('#audit-view').waitFor();
  await filterAudit({ action: 'key.' });
  const keyRows = await auditRows();
  assert.deepEqual(keyRows.map((r) => r.action), ['key.rotate', 'key.drop']);
  assert.equal(keyRows[0].actor, `token #${operatorId()}`);
  await page.locator('#audit-clear').click();
  await page.getByRole('link', { name: 'Domains and tokens' }).click();
  await visible('#operator-view').waitFor();
});

step('readable at phone width', async () => {
  await page.setViewportSize({ width: 375, height: 812 });
  const overflow = async () => page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.equal(await overflow(), 0, 'operator view scrolls sideways at 375 px');
  await shot('phone-operator');
  await page.getByRole('link', { name: 'Configure single sign-on for acme.com' }).click();
  await visible('#config-form').waitFor();
  await expectText('#secret-masked', /^\*{8}lue!$/);
  assert.equal(await overflow(), 0, 'config view scrolls sideways at 375 px');
  await shot('phone-config');
  await page.goto(`${base}/#/audit`);
  await visible('#audit-view').waitFor();
  await expectText('#audit-summary', /Page 1: /);
  assert.equal(await overflow(), 0, 'audit view scrolls sideways at 375 px (the table scrolls in its box)');
  await shot('phone-audit');
  await page.goto(`${base}/#/keys`);
  await visible('#keys-view').waitFor();
  await expectText('#keys-progress-text', /100 %/);
  assert.equal(await overflow(), 0, 'keys view scrolls sideways at 375 px');
  await page.goto(`${base}/#/`);
  await visible('#operator-view').waitFor();
  await page.setViewportSize({ width: 1100, height: 900 });
});

step('no request to another origin, no policy violation, no script error', async () => {
  assert.ok(requests.length > 10, `too few requests recorded: ${requests.length}`);
  const foreign = requests.filter((u) => new URL(u).origin !== base);
  assert.deepEqual(foreign, [], 'requests to another origin');
  const paths = new Set(requests.map((u) => new URL(u).pathname));
  for (const p of ['/', '/ui/app.js', '/ui/sso.js', '/ui/ops.js', '/ui/app.css', '/ui/icon.svg']) assert.ok(paths.has(p), `${p} not loaded`);
  assert.deepEqual(problems, []);
  // Signing in asks who the token is (GET /auth/whoami/): it provokes no 403,
  // and no step gets one. The only failed answers of the sign-in steps are the
  // ones they cause on purpose: a wrong token (401), an invalid and a duplicate
  // domain (400), and the 404 of a domain without a configuration yet (the
  // contract's answer for that expected state).
  const failedIn = (name) => failedAnswers.filter((f) => f.step === name).map((f) => f.what);
  assert.deepEqual(failedIn(WRONG_TOKEN_STEP), ['GET /api/v1/auth/whoami/ 401'], WRONG_TOKEN_STEP);
  assert.deepEqual(failedIn(DOMAIN_SIGN_IN_STEP), ['GET /api/v1/enterprises/oidc/config/ 404'], DOMAIN_SIGN_IN_STEP);
  assert.deepEqual(failedIn(RELOAD_STEP), [], RELOAD_STEP);
  assert.deepEqual(failedIn(OPERATOR_SIGN_IN_STEP),
    ['POST /api/v1/admin/domains/ 400', 'POST /api/v1/admin/domains/ 400'], OPERATOR_SIGN_IN_STEP);
  assert.deepEqual(failedIn(APP_STEP), ['POST /api/v1/admin/apps/ 400'], APP_STEP);
  assert.deepEqual(failedIn(AUDIT_FILTER_STEP), ['GET /api/v1/admin/audit/ 400'], AUDIT_FILTER_STEP);
  assert.deepEqual(failedAnswers.filter((f) => / 403$/.test(f.what)), [], 'answers 403');
  // The server never logged a secret or a token.
  for (const secret of [CLIENT_SECRET, 'n3w-s3cr3t-v4lue!', 'globex-secret-123456', domainToken, operatorToken]) {
    assert.ok(!serverLog.includes(secret), 'a secret in the server log');
  }
  process.stdout.write(`# ${requests.length} requests, all to ${base}; screenshots in ${SHOTS}\n`);
});
