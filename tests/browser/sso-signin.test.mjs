// The sign-in broker end to end in headless Debian Chromium (playwright-core):
// a tiny test application on loopback sends the browser to the broker, which
// sends it to a real OpenID Provider (panva's oidc-provider, its own login form);
// the user signs in there, the broker validates the answer and sends the browser
// back to the application, which redeems the one-time code for the profile. Then
// the admin page: the application in the operator's list, the callback URL to
// register at the provider, and "Try sign-in" in a new tab.
//
// Started by tests/browser.rs (`sso_sign_in_in_headless_chromium`), which starts
// the provider and the binary, creates the domain, its OIDC config and the
// application, and passes them here:
//   OIDCVAULT_BASE            the broker (its server.public_url)
//   OIDCVAULT_OPERATOR_TOKEN  for the admin page
//   OIDCVAULT_SCREENSHOTS     where the screenshots go
//   SSO_ISSUER                the provider's issuer
//   SSO_DOMAIN, SSO_DOMAIN_ID the enterprise domain (name, id)
//   SSO_OTHER_DOMAIN          another domain at the same provider, which the
//                             account's e-mail is not in
//   SSO_LOGIN, SSO_PASSWORD   the account at the provider's login form
//   SSO_EMAIL, SSO_SUB        what its profile must say
//   SSO_APP_PORT              where the test application listens
//   SSO_APP_REDIRECT_URI      its registered redirect URI (…/callback)
//   SSO_APP_CLIENT_ID, SSO_APP_CLIENT_SECRET  its credentials at the broker
//   SSO_IDP_CLIENT_SECRET     the secret the vault keeps: never in any page
//   SSO_HTTPS                 "true": the broker is on https (a self-signed
//                             certificate the browser is told to accept; node
//                             trusts it through NODE_EXTRA_CA_CERTS)
//   CHROMIUM                  default /usr/bin/chromium

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

import { chromium } from 'playwright-core';

const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: this script is run by tests/browser.rs (sso_sign_in_in_headless_chromium)`);
  return v;
};
const BASE = need('OIDCVAULT_BASE');
const OPERATOR = need('OIDCVAULT_OPERATOR_TOKEN');
const SHOTS = need('OIDCVAULT_SCREENSHOTS');
const ISSUER = need('SSO_ISSUER');
const DOMAIN = need('SSO_DOMAIN');
const DOMAIN_ID = Number(need('SSO_DOMAIN_ID'));
const OTHER_DOMAIN = need('SSO_OTHER_DOMAIN');
const LOGIN = need('SSO_LOGIN');
const PASSWORD = need('SSO_PASSWORD');
const EMAIL = need('SSO_EMAIL');
const SUB = need('SSO_SUB');
const APP_PORT = Number(need('SSO_APP_PORT'));
const APP_REDIRECT = need('SSO_APP_REDIRECT_URI');
const APP_CLIENT_ID = need('SSO_APP_CLIENT_ID');
const APP_SECRET = need('SSO_APP_CLIENT_SECRET');
const IDP_SECRET = need('SSO_IDP_CLIENT_SECRET');
const HTTPS = process.env.SSO_HTTPS === 'true';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// The browser-binding cookie: __Host- prefixed and Secure on an https public URL.
const BINDING = HTTPS ? '__Host-oidcvault_sso' : 'oidcvault_sso';
const APP = `http://127.0.0.1:${APP_PORT}`;
const CHECKS = ['state', 'cookie', 'iss', 'token_exchange', 'signature', 'issuer', 'audience',
  'expiry', 'nonce', 'email_domain', 'email_verified'];

// ---- the test application (a relying party of the broker) ---------------------------

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const pageOf = (title, body) => `<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>${esc(title)}</title></head><body><h1>${esc(title)}</h1>${body}</body></html>`;

/** What the application saw, for the assertions. */
const app = {
  pending: new Map(), // state -> PKCE verifier (one sign-in at a time per state)
  codes: [], // every code the broker sent back
  tokenAnswers: [], // { status, body } of each POST /sso/token
};

function cookieOf(req, name) {
  for (const part of (req.headers.cookie || '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === name) return v.join('=');
  }
  return null;
}

async function redeem(code, verifier, { secret = APP_SECRET } = {}) {
  const basic = Buffer.from(`${encodeURIComponent(APP_CLIENT_ID)}:${encodeURIComponent(secret)}`).toString('base64');
  const res = await fetch(`${BASE}/sso/token`, {
    method: 'POST',
    headers: { Authorization: `Basic ${basic}`, 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json' },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: APP_REDIRECT, code_verifier: verifier }),
  });
  const text = await res.text();
  let body = null;
  try { body = JSON.parse(text); } catch { body = text; }
  return { status: res.status, body, headers: Object.fromEntries(res.headers) };
}

async function appHandler(req, res) {
  const url = new URL(req.url, APP);
  const send = (status, html, headers = {}) => {
    res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store', ...headers });
    res.end(html);
  };
  if (url.pathname === '/') {
    return send(200, pageOf('Example app', `<form action="/login" method="get">
<label for="email">Work e-mail</label> <input id="email" name="email" type="email" required>
<button type="submit" id="sign-in">Sign in</button></form>`));
  }
  if (url.pathname === '/login') {
    const state = crypto.randomBytes(24).toString('base64url');
    const verifier = crypto.randomBytes(32).toString('base64url');
    app.pending.set(state, verifier);
    const to = new URL(`${BASE}/sso/authorize`);
    to.search = new URLSearchParams({
      client_id: APP_CLIENT_ID, redirect_uri: APP_REDIRECT, state,
      login_hint: url.searchParams.get('email') || '',
      code_challenge: crypto.createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
    }).toString();
    // One cookie per sign-in (named by its state), so two tabs can sign in at once.
    return send(302, '', { Location: to.toString(), 'Set-Cookie': `example_app_${state}=1; HttpOnly; SameSite=Lax; Path=/; Max-Age=600` });
  }
  if (url.pathname === '/callback') {
    const state = url.searchParams.get('state') || '';
    const verifier = app.pending.get(state);
    if (!verifier || cookieOf(req, `example_app_${state}`) !== '1') {
      return send(400, pageOf('Sign-in failed', '<p id="error">unknown state, or not this browser\'s</p>'));
    }
    app.pending.delete(state);
    if (url.searchParams.has('error')) {
      return send(200, pageOf('Sign-in failed', `<p id="error">${esc(url.searchParams.get('error'))}: ${esc(url.searchParams.get('error_description') || '')}</p>`));
    }
    const code = url.searchParams.get('code') || '';
    app.codes.push({ code, verifier });
    const answer = await redeem(code, verifier);
    app.tokenAnswers.push(answer);
    if (answer.status !== 200) {
      return send(200, pageOf('Sign-in failed', `<pre id="error">${esc(JSON.stringify(answer.body))}</pre>`));
    }
    const p = answer.body.profile;
    return send(200, pageOf('Signed in', `<p id="who">Signed in as ${esc(p.email)} (${esc(p.domain)})</p>
<pre id="profile">${esc(JSON.stringify(p, null, 2))}</pre>`));
  }
  return send(404, pageOf('Not found', ''));
}

// ---- the browser --------------------------------------------------------------------

let appServer = null;
let context = null;
let page = null;
let profileDir = null;
const bodies = []; // { url, text } of every document and fetch answer the browser got
const problems = []; // script errors and policy violations on the broker's pages
const chain = []; // 'METHOD url -> status location' of every navigation request
const brokerAnswers = []; // { url, status, headers } of the broker's browser routes (/sso/*)
let shotCount = 0;

async function shot(p, name) {
  shotCount += 1;
  const file = path.join(SHOTS, `${String(shotCount).padStart(2, '0')}-${name}.png`);
  await p.screenshot({ path: file, fullPage: true });
  return file;
}

function watch(p) {
  p.on('pageerror', (e) => problems.push(`uncaught on ${p.url()}: ${e.message}`));
  p.on('console', (m) => {
    if (/Content Security Policy|Refused to|Trusted Type/i.test(m.text()) && p.url().startsWith(BASE)) {
      problems.push(`console on ${p.url()}: ${m.text()}`);
    }
  });
}

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install chromium chromium-driver`);
  fs.mkdirSync(SHOTS, { recursive: true });
  for (const f of fs.readdirSync(SHOTS)) if (f.endsWith('.png')) fs.rmSync(path.join(SHOTS, f));
  appServer = http.createServer((req, res) => appHandler(req, res).catch((e) => {
    res.writeHead(500);
    res.end(String(e && e.stack));
  }));
  await new Promise((resolve, reject) => {
    appServer.once('error', reject);
    appServer.listen(APP_PORT, '127.0.0.1', resolve);
  });

  profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'oidcvault-chromium-sso-'));
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // Nothing beyond loopback (the provider's dev pages link a web font).
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
      '--disable-features=AsyncDns,DnsOverHttps,MediaRouter,OptimizationHints,Translate',
      '--dns-prefetch-disable',
    ],
    viewport: { width: 1100, height: 900 },
    ignoreHTTPSErrors: HTTPS,
    locale: 'en-US',
    timezoneId: 'UTC',
  });
  context.setDefaultTimeout(30_000);
  context.on('response', async (r) => {
    const req = r.request();
    if (r.url().startsWith(`${BASE}/sso/`)) {
      brokerAnswers.push({ url: r.url(), status: r.status(), headers: r.headers() });
    }
    if (req.isNavigationRequest()) {
      chain.push(`${req.method()} ${r.url()} -> ${r.status()}${r.headers().location ? ` ${r.headers().location}` : ''}`);
    }
    if (!['document', 'fetch', 'xhr'].includes(req.resourceType()) || (r.status() >= 300 && r.status() < 400)) return;
    try {
      bodies.push({ url: r.url(), text: await r.text() });
    } catch {
      // a body the browser no longer holds (page gone): nothing to check
    }
  });
  context.on('page', watch);
  page = context.pages()[0] || await context.newPage();
  watch(page);
});

after(async () => {
  if (context) await context.close().catch(() => {});
  if (appServer) appServer.close();
  if (profileDir) fs.rmSync(profileDir, { recursive: true, force: true });
});

// ---- helpers ----------------------------------------------------------------------------

async function expectText(p, selector, pattern) {
  await p.waitForFunction(
    ([sel, source, flags]) => {
      const node = document.querySelector(sel);
      return node && new RegExp(source, flags).test(node.textContent);
    },
    [selector, pattern.source, pattern.flags],
  ).catch(async (e) => {
    const actual = await p.locator(selector).first().textContent().catch(() => '(missing)');
    throw new Error(`${selector} on ${p.url()} never matched ${pattern}; it reads ${JSON.stringify(actual)}\n${e.message}`);
  });
}

/** The provider's own login form: type the login and password (a screenshot then), submit. */
async function signInAtIdp(p, { password = PASSWORD, screenshot = null } = {}) {
  await p.locator('input[name=login]').fill(LOGIN);
  await p.locator('input[name=password]').fill(password);
  if (screenshot) await shot(p, screenshot);
  await p.locator('button[type=submit]').click();
}

let broken = null;
function step(name, fn) {
  test(name, async (t) => {
    if (broken) {
      t.skip(`after the failure of "${broken}"`);
      return;
    }
    try {
      await fn();
    } catch (e) {
      broken = name;
      await shot(page, `FAILED-${name.replace(/[^a-z0-9]+/gi, '-').slice(0, 50)}`).catch(() => {});
      throw new Error(`${e.message}\nnavigations so far:\n  ${chain.join('\n  ')}`, { cause: e });
    }
  });
}

// ---- the scenario -------------------------------------------------------------------------

let idpCallback = null; // the provider's redirect to the broker's /sso/callback

step('the application starts a sign-in: the broker sends the browser to the provider\'s login form', async () => {
  const res = await page.goto(`${APP}/`);
  assert.equal(res.status(), 200);
  await shot(page, 'app-start');
  await page.locator('#email').fill(EMAIL);
  await page.locator('#sign-in').click();
  await page.waitForURL((u) => u.href.startsWith(`${ISSUER}/interaction/`));
  await expectText(page, 'h1', /Sign-in/);
  // login_hint was passed on: the provider's form is filled with the e-mail.
  assert.equal(await page.locator('input[name=login]').inputValue(), EMAIL);
  const authorize = chain.find((c) => c.startsWith(`GET ${BASE}/sso/authorize?`));
  assert.ok(authorize && authorize.includes(`-> 302 ${ISSUER}/auth?`), `the broker's answer to authorize: ${authorize}`);
  const at = new URL(authorize.split(' ').pop());
  assert.equal(at.searchParams.get('redirect_uri'), `${BASE}/sso/callback`);
  assert.equal(at.searchParams.get('response_type'), 'code');
  assert.deepEqual(at.searchParams.get('scope').split(' ').sort(), ['email', 'openid', 'profile']);
  assert.equal(at.searchParams.get('code_challenge_method'), 'S256');
  assert.equal(at.searchParams.get('login_hint'), EMAIL);
  for (const p of ['state', 'nonce', 'code_challenge']) assert.ok(at.searchParams.get(p), `no ${p} in ${at}`);
  // The browser binding: HttpOnly, SameSite=Lax, host-only; Secure and
  // __Host- prefixed on an https public URL (the browser stored it: its
  // attributes passed the prefix's rules).
  const cookies = await context.cookies(BASE);
  const binding = cookies.find((c) => c.name === BINDING);
  assert.ok(binding, `no ${BINDING} cookie: ${JSON.stringify(cookies.map((c) => c.name))}`);
  assert.equal(binding.httpOnly, true);
  assert.equal(binding.sameSite, 'Lax');
  assert.equal(binding.path, '/');
  assert.equal(binding.secure, HTTPS);
  assert.equal(binding.domain, '127.0.0.1', 'host-only');
  await shot(page, 'idp-login');
});

step('a wrong password at the provider brings its form back', async () => {
  const form = page.url();
  const back = page.waitForResponse((r) => r.url() === form && r.request().method() === 'GET');
  await signInAtIdp(page, { password: 'not the password' });
  assert.equal((await back).status(), 200);
  await page.waitForLoadState('load');
  assert.equal(page.url(), form);
  await page.locator('input[name=password]').waitFor();
});

step('signing in at the provider lands back at the application with the verified profile', async () => {
  await signInAtIdp(page, { screenshot: 'idp-login-typed' });
  await page.waitForURL((u) => u.href.startsWith(`${APP}/callback`));
  await expectText(page, 'h1', /^Signed in$/);
  await shot(page, 'app-signed-in');
  idpCallback = chain.find((c) => c.startsWith(`GET ${BASE}/sso/callback?`));
  assert.ok(idpCallback, 'the provider never sent the browser to the broker\'s callback');
  const cb = new URL(idpCallback.split(' ')[1]);
  assert.equal(cb.searchParams.get('iss'), ISSUER, 'RFC 9207 iss from the provider');
  assert.match(idpCallback, new RegExp(`-> 302 ${APP_REDIRECT.replace(/[.?*+^$()[\]{}|\\/]/g, '\\$&')}\\?`));
  assert.equal(app.tokenAnswers.length, 1);
  const answer = app.tokenAnswers[0];
  assert.equal(answer.status, 200, `POST /sso/token: ${JSON.stringify(answer.body)}`);
  const p = answer.body.profile;
  assert.equal(p.email, EMAIL);
  assert.equal(p.email_verified, true);
  assert.equal(p.sub, SUB);
  assert.equal(p.issuer, ISSUER);
  assert.equal(p.enterprise_domain, DOMAIN_ID, `enterprise_domain (the domain's id, as in the config object): ${JSON.stringify(p)}`);
  assert.equal(p.domain, DOMAIN);
  assert.equal(p.name, 'Alice Example');
  assert.equal(p.given_name, 'Alice');
  assert.equal(p.family_name, 'Example');
  assert.equal(typeof p.id, 'string');
  assert.ok(p.id.length >= 32, `id: ${p.id}`);
  assert.ok(p.claims && typeof p.claims === 'object', 'claims');
  assert.ok(!Number.isNaN(Date.parse(p.authenticated_at)), `authenticated_at: ${p.authenticated_at}`);
  for (const key of ['id_token', 'access_token', 'client_secret', 'code']) assert.ok(!(key in answer.body), `${key} in the answer`);
  assert.match(answer.headers['cache-control'] || '', /no-store/, 'the profile answer is not cacheable');
  // What the page shows is the profile the application got.
  assert.equal(JSON.parse(await page.locator('#profile').textContent()).sub, SUB);
  await expectText(page, '#who', new RegExp(`Signed in as ${EMAIL.replace('.', '\\.')}`));
});

step('the code is redeemed once: a second redemption and a wrong secret are refused', async () => {
  const { code, verifier } = app.codes[0];
  const again = await redeem(code, verifier);
  assert.equal(again.status, 400, JSON.stringify(again.body));
  assert.equal(again.body.error, 'invalid_grant');
  const wrong = await redeem(code, verifier, { secret: `${APP_SECRET}x` });
  assert.equal(wrong.status, 401, JSON.stringify(wrong.body));
  assert.equal(wrong.body.error, 'invalid_client');
});

step('the provider\'s answer replayed is refused with an error page, not a redirect', async () => {
  const url = idpCallback.split(' ')[1];
  const res = await page.goto(url);
  assert.equal(res.status(), 400);
  assert.equal(page.url(), url, 'no redirect');
  await expectText(page, 'h1', /Sign-in failed/);
  assert.equal(app.tokenAnswers.length, 1, 'nothing more reached the application');
  await shot(page, 'replayed-callback');
});

step('an unregistered redirect URI or an unknown application gets an error page, never a redirect', async () => {
  const authorize = (params) => `${BASE}/sso/authorize?${new URLSearchParams({
    client_id: APP_CLIENT_ID, redirect_uri: APP_REDIRECT, state: 's', login_hint: EMAIL, ...params,
  })}`;
  for (const params of [
    { redirect_uri: 'https://attacker.example/callback' },
    { redirect_uri: `${APP_REDIRECT}/../evil` },
    { redirect_uri: `${APP_REDIRECT}?next=x` },
    { client_id: 'ova_unknown' },
  ]) {
    const url = authorize(params);
    const res = await page.goto(url);
    assert.equal(res.status(), 400, `${JSON.stringify(params)}: ${res.status()}`);
    assert.equal(page.url(), url, `${JSON.stringify(params)}: no redirect`);
    await expectText(page, 'h1', /^Sign-in failed$/);
  }
  await shot(page, 'unregistered-redirect-uri');
});

/** The provider forgets the browser's session (its cookies, not the broker's or the app's). */
async function forgetIdpSession() {
  await context.clearCookies({ name: /^_(session|interaction)/ });
}

/** From the application's start page to the provider's login form, in `p`. */
async function startAtApp(p) {
  await p.goto(`${APP}/`);
  await p.locator('#email').fill(EMAIL);
  await p.locator('#sign-in').click();
  await p.waitForURL((u) => u.href.startsWith(`${ISSUER}/interaction/`));
}

step('cancelling at the provider returns access_denied to the application, with its state', async () => {
  await forgetIdpSession();
  const answers = app.tokenAnswers.length;
  await startAtApp(page);
  await page.getByRole('link', { name: '[ Cancel ]' }).click();
  await page.waitForURL((u) => u.href.startsWith(`${APP}/callback`));
  await expectText(page, 'h1', /^Sign-in failed$/);
  // The application found its own state (else it would say "unknown state").
  await expectText(page, '#error', /^access_denied: \S/);
  const back = new URL(page.url());
  assert.equal(back.searchParams.get('error'), 'access_denied');
  assert.ok(!back.searchParams.has('code'), 'no code with an error');
  assert.equal(app.tokenAnswers.length, answers, 'nothing redeemed');
  await shot(page, 'app-cancelled-at-idp');
});

step('two sign-ins at once, in two tabs of one browser, both succeed', async () => {
  await forgetIdpSession();
  const answers = app.tokenAnswers.length;
  const second = await context.newPage();
  try {
    await startAtApp(page);
    await startAtApp(second);
    // The second finishes first.
    await signInAtIdp(second);
    await second.waitForURL((u) => u.href.startsWith(`${APP}/callback`));
    await expectText(second, 'h1', /^Signed in$/);
    await signInAtIdp(page);
    await page.waitForURL((u) => u.href.startsWith(`${APP}/callback`));
    await expectText(page, 'h1', /^Signed in$/);
    const got = app.tokenAnswers.slice(answers);
    assert.deepEqual(got.map((a) => a.status), [200, 200], JSON.stringify(got.map((a) => a.body)));
    assert.deepEqual(got.map((a) => a.body.profile.sub), [SUB, SUB]);
  } finally {
    await second.close();
  }
});

step('a sign-in finished in another browser (no binding cookie) gets no code', async () => {
  // This browser starts a sign-in; its provider URL is taken to another
  // browser (login CSRF: an attacker's sign-in pushed onto a victim), which
  // signs in at the provider and comes back to the broker without the cookie.
  // (Through the context's own HTTP client: its cookies are the browser's.)
  const hop = async (url) => {
    const r = await context.request.get(url, { maxRedirects: 0 });
    assert.equal(r.status(), 302, `${url}: ${r.status()} ${await r.text()}`);
    return r.headers().location;
  };
  const idpUrl = await hop(await hop(`${APP}/login?email=${encodeURIComponent(EMAIL)}`));
  assert.ok(idpUrl.startsWith(`${ISSUER}/auth?`), `the broker sent the browser to ${idpUrl}`);
  const codes = app.codes.length;
  const other = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1'] });
  try {
    const victim = await (await other.newContext({ ignoreHTTPSErrors: HTTPS })).newPage();
    const seen = [];
    victim.on('response', (r) => {
      if (r.request().isNavigationRequest()) seen.push(`${r.url()} -> ${r.status()} ${r.headers().location || ''}`);
    });
    await victim.goto(idpUrl);
    await signInAtIdp(victim);
    await victim.waitForURL((u) => !u.href.startsWith(ISSUER));
    await victim.waitForLoadState('load');
    const callback = seen.find((x) => x.startsWith(`${BASE}/sso/callback?`));
    assert.ok(callback, `the provider did not send the other browser to the broker: ${seen.join('\n')}`);
    assert.ok(!/ -> 302 \S*[?&]code=/.test(callback), `a code for a browser without the cookie: ${callback}`);
    await expectText(victim, 'h1', /^Sign-in failed$/);
    await shot(victim, 'other-browser-refused');
  } finally {
    await other.close();
  }
  assert.equal(app.codes.length, codes, 'a code reached the application');
});

// ---- the admin page -----------------------------------------------------------------------

let admin = null;

step('operator: the application is listed (never its secret)', async () => {
  admin = await context.newPage();
  await admin.goto(`${BASE}/`);
  await admin.locator('#token').fill(OPERATOR);
  await admin.locator('#token').press('Enter');
  await admin.locator('#operator-view').waitFor();
  await expectText(admin, '#app-list', /Example app/);
  await expectText(admin, '#app-list', new RegExp(APP_CLIENT_ID.replace(/[-_]/g, '.')));
  await expectText(admin, '#app-list', new RegExp(APP_REDIRECT.replace(/[.?/]/g, '.')));
  assert.ok(!(await admin.content()).includes(APP_SECRET));
  await shot(admin, 'admin-applications');
});

step('operator: the domain\'s page shows the callback URL to register at the provider', async () => {
  await admin.getByRole('link', { name: `Configure single sign-on for ${DOMAIN}` }).click();
  await admin.locator('#config-form').waitFor();
  await expectText(admin, '#callback-url', new RegExp(`^${BASE.replace(/[.]/g, '\\.')}/sso/callback$`));
  await shot(admin, 'admin-callback-url');
});

step('operator: Try sign-in opens a new tab that ends on "succeeded" with every check', async () => {
  const sent = [];
  admin.on('request', (r) => {
    if (r.url().endsWith('/api/v1/enterprises/oidc/sign-in-test/')) sent.push(r.headers()['x-enterprise-domain']);
  });
  const answers = app.tokenAnswers.length;
  const opened = context.waitForEvent('page');
  await admin.locator('#try-sign-in').click();
  const tab = await opened;
  assert.deepEqual(sent, [DOMAIN], 'sent with X-Enterprise-Domain');
  // The provider remembers the user from the first sign-in, or asks again.
  await tab.waitForURL((u) => u.href.startsWith(`${BASE}/sso/callback`) || u.href.startsWith(`${ISSUER}/interaction/`));
  if (tab.url().startsWith(`${ISSUER}/interaction/`)) {
    await signInAtIdp(tab, { screenshot: 'try-sign-in-idp' });
    await tab.waitForURL((u) => u.href.startsWith(`${BASE}/sso/callback`));
  }
  await expectText(tab, 'h1', /Sign-in test: succeeded/);
  await shot(tab, 'try-sign-in-result');
  const rows = await tab.locator('#checks [data-check]').evaluateAll((trs) => trs.map((tr) => [tr.dataset.check, tr.dataset.status]));
  const status = Object.fromEntries(rows);
  for (const check of CHECKS) assert.equal(status[check], 'ok', `check ${check}: ${JSON.stringify(rows)}`);
  const profile = JSON.parse(await tab.locator('#profile').textContent());
  assert.equal(profile.email, EMAIL);
  assert.equal(profile.sub, SUB);
  assert.equal(app.tokenAnswers.length, answers, 'the test sign-in sent nothing to the application');
  await expectText(admin, '#notice', /new tab/);
  await tab.close();
});

step('operator: Try sign-in for a domain the e-mail is not in fails at email_domain', async () => {
  await admin.locator('#back-to-domains').click();
  await admin.locator('#operator-view').waitFor();
  await admin.getByRole('link', { name: `Configure single sign-on for ${OTHER_DOMAIN}` }).click();
  await admin.locator('#provider-card').waitFor();
  const opened = context.waitForEvent('page');
  await admin.locator('#try-sign-in').click();
  const tab = await opened;
  await tab.waitForURL((u) => u.href.startsWith(`${BASE}/sso/callback`) || u.href.startsWith(`${ISSUER}/interaction/`));
  if (tab.url().startsWith(`${ISSUER}/interaction/`)) await signInAtIdp(tab);
  await expectText(tab, 'h1', /Sign-in test: failed/);
  await shot(tab, 'try-sign-in-failed');
  const rows = await tab.locator('#checks [data-check]').evaluateAll((trs) => trs.map((tr) => [tr.dataset.check, tr.dataset.status, tr.textContent]));
  const status = Object.fromEntries(rows.map(([c, st]) => [c, st]));
  assert.equal(status.email_domain, 'failed', JSON.stringify(rows));
  assert.match(rows.find(([c]) => c === 'email_domain')[2], new RegExp(`${EMAIL.replace('.', '\\.')}.*${OTHER_DOMAIN.replace('.', '\\.')}`));
  for (const check of CHECKS.slice(0, CHECKS.indexOf('email_domain'))) assert.equal(status[check], 'ok', `check ${check}: ${JSON.stringify(rows)}`);
  assert.notEqual(status.email_verified, 'ok', 'not reached after the failure');
  assert.equal(await tab.locator('#profile').count(), 0, 'no profile for a failed sign-in');
  await tab.close();
});

step('no page or answer the browser got holds a client secret; no script error', async () => {
  assert.ok(bodies.length > 5, `too few answers recorded: ${bodies.length}`);
  for (const { url, text } of bodies) {
    assert.ok(!text.includes(IDP_SECRET), `the provider client secret in ${url}`);
    assert.ok(!text.includes(APP_SECRET), `the application's client secret in ${url}`);
  }
  for (const p of context.pages()) {
    const html = await p.content();
    assert.ok(!html.includes(IDP_SECRET) && !html.includes(APP_SECRET), `a secret in ${p.url()}`);
  }
  assert.deepEqual(problems, []);
  // The broker's answers to the browser (redirects with codes and states in
  // their URLs, the pages) are never cached and leak no URL onwards; its pages
  // run nothing.
  const paths = brokerAnswers.map((a) => `${new URL(a.url).pathname} ${a.status}`);
  for (const expected of ['/sso/authorize 302', '/sso/callback 302', '/sso/callback 400', '/sso/callback 200']) {
    assert.ok(paths.includes(expected), `no ${expected} among ${paths}`);
  }
  for (const { url, status, headers } of brokerAnswers) {
    const what = `${new URL(url).pathname} ${status}`;
    assert.match(headers['cache-control'] || '', /no-store/, `${what}: Cache-Control`);
    assert.equal(headers['referrer-policy'], 'no-referrer', `${what}: Referrer-Policy`);
    if (status !== 302) {
      assert.match(headers['content-type'] || '', /^text\/html/, `${what}: Content-Type`);
      assert.match(headers['content-security-policy'] || '', /default-src 'none'/, `${what}: CSP`);
    }
  }
  process.stdout.write(`# ${bodies.length} answers checked; screenshots in ${SHOTS}\n`);
});
