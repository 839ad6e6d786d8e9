// oidcvault admin page: a thin client of the JSON API under /api/v1/.
//
// Safe by construction: every piece of text from the server or the user goes into
// the page through textContent, createElement or an input's value, never through
// HTML parsing (the page's Content-Security-Policy requires Trusted Types for
// script sinks, so an innerHTML assignment would throw). The client secret is
// write-only: the page shows only the masked form the API returns, sends the
// secret field only when something was typed into it, and empties it after a save.
// The token lives in sessionStorage (this tab only) and in memory.
'use strict';

(() => {
  const API = '/api/v1';
  const CONFIG_PATH = `${API}/enterprises/oidc/config/`;
  const DOMAINS_PATH = `${API}/admin/domains/`;
  const TOKENS_PATH = `${API}/admin/tokens/`;
  const WHOAMI_PATH = `${API}/auth/whoami/`;
  const TOKEN_KEY = 'oidcvault.token';
  const URL_FIELDS = ['discovery_url', 'authorization_endpoint', 'token_endpoint', 'userinfo_endpoint'];
  const DOMAIN_ROUTE = '#/domain/';

  const $ = (id) => {
    const node = document.getElementById(id);
    if (!node) throw new Error(`missing element #${id}`);
    return node;
  };

  const state = {
    token: null,
    role: null, // 'operator' | 'domain'
    domains: [],
    tokens: [],
    editing: null, // the domain an operator edits (sent as X-Enterprise-Domain)
    config: null, // the stored config shown in the form, or null
  };

  // ---- DOM helpers (text only) ---------------------------------------------------

  /** An element with attributes and children; strings become text nodes. */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (name === 'class') node.className = value;
      else if (name === 'onclick') node.addEventListener('click', value);
      else node.setAttribute(name, String(value));
    }
    node.append(...children);
    return node;
  }

  function timeEl(iso) {
    const when = new Date(iso);
    const text = Number.isNaN(when.getTime()) ? String(iso) : when.toLocaleString();
    return el('time', { datetime: String(iso) }, text);
  }

  function focusHeading(id) {
    const heading = $(id);
    heading.focus({ preventScroll: false });
  }

  // ---- announcements -------------------------------------------------------------

  function announce(text) {
    $('alert').textContent = '';
    $('notice').textContent = text;
  }

  function announceError(text) {
    $('notice').textContent = '';
    $('alert').textContent = text;
  }

  function clearAnnouncements() {
    $('notice').textContent = '';
    $('alert').textContent = '';
  }

  // ---- the API -------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      super(describe(status, body));
      this.status = status;
      this.body = body;
    }
  }

  function describe(status, body) {
    if (body && typeof body === 'object' && typeof body.detail === 'string') {
      return body.detail;
    }
    switch (status) {
      case 0: return 'The server could not be reached. Check that it is running, then try again.';
      case 400: return 'The server refused the request.';
      case 401: return 'The token is not accepted.';
      case 403: return 'This token is not allowed to do that.';
      case 404: return 'Not found.';
      default: return `Unexpected answer from the server (HTTP ${status}).`;
    }
  }

  async function request(method, path, { body, domain, credentials = 'omit' } = {}) {
    const headers = { Accept: 'application/json' };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (domain) headers['X-Enterprise-Domain'] = domain;
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials,
        redirect: 'error',
        referrerPolicy: 'no-referrer',
      });
    } catch {
      throw new ApiError(0, null);
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    return { status: res.status, ok: res.ok, data };
  }

  /** A request made while signed in: a 401 means the token went away. */
  async function api(method, path, options) {
    const res = await request(method, path, options);
    if (res.status === 401) {
      signOut('Your token is no longer accepted (revoked, or its domain removed). Sign in again.');
      throw new ApiError(401, res.data);
    }
    if (!res.ok) throw new ApiError(res.status, res.data);
    return res.data;
  }

  // ---- field errors (DRF style: {"field": ["message", ...]}) ---------------------

  function errorSlot(form, field) {
    for (const slot of form.querySelectorAll('[data-error-for]')) {
      if (slot.dataset.errorFor.split(' ').includes(field)) return slot;
    }
    return null;
  }

  function inputFor(slot) {
    return document.getElementById(slot.id.replace(/-error$/, ''));
  }

  /** A field's messages as one line; nested ones (a list's items) prefixed by position. */
  function messageText(messages) {
    if (Array.isArray(messages)) return messages.map(messageText).join(' ');
    if (messages && typeof messages === 'object') {
      return Object.entries(messages)
        .map(([key, inner]) => `${/^\d+$/.test(key) ? `#${Number(key) + 1}` : key}: ${messageText(inner)}`)
        .join(' ');
    }
    return String(messages);
  }

  function clearFieldErrors(form) {
    for (const slot of form.querySelectorAll('[data-error-for]')) {
      slot.textContent = '';
      const input = inputFor(slot);
      if (input) input.removeAttribute('aria-invalid');
    }
  }

  /**
   * Show an API failure: field errors beside their fields, anything else in the
   * alert. `what` names the action ("Not saved").
   */
  function showFailure(form, err, what) {
    clearFieldErrors(form);
    const body = err instanceof ApiError ? err.body : null;
    const fieldErrors = err instanceof ApiError && err.status === 400 && body
      && typeof body === 'object' && !Array.isArray(body) && !('detail' in body);
    if (!fieldErrors) {
      announceError(`${what}: ${err instanceof ApiError ? err.message : String(err)}`);
      return;
    }
    const named = [];
    const elsewhere = [];
    let first = null;
    for (const [field, messages] of Object.entries(body)) {
      const text = messageText(messages);
      const slot = errorSlot(form, field);
      const input = slot && inputFor(slot);
      if (slot && input) {
        slot.textContent = text;
        input.setAttribute('aria-invalid', 'true');
        first = first || input;
        const label = input.labels && input.labels[0] ? input.labels[0].textContent.trim() : field;
        if (!named.includes(label)) named.push(label);
      } else {
        elsewhere.push(`${field}: ${text}`);
      }
    }
    const parts = [];
    if (named.length) parts.push(`check ${named.join(', ')}.`);
    if (elsewhere.length) parts.push(elsewhere.join(' '));
    announceError(`${what}: ${parts.join(' ')}`);
    if (first) first.focus();
  }

  async function busy(form, work) {
    const buttons = form.querySelectorAll('button');
    form.setAttribute('aria-busy', 'true');
    for (const b of buttons) b.disabled = true;
    try {
      return await work();
    } finally {
      form.removeAttribute('aria-busy');
      for (const b of buttons) b.disabled = false;
    }
  }

  // ---- confirmation dialog -------------------------------------------------------

  function confirmAction(title, text, okLabel) {
    const dialog = $('confirm');
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = okLabel;
    const opener = document.activeElement;
    return new Promise((resolve) => {
      const done = (answer) => {
        $('confirm-ok').removeEventListener('click', onOk);
        $('confirm-cancel').removeEventListener('click', onCancel);
        dialog.removeEventListener('close', onClose);
        if (dialog.open) dialog.close();
        if (opener && opener.isConnected && typeof opener.focus === 'function') opener.focus();
        resolve(answer);
      };
      const onOk = () => done(true);
      const onCancel = () => done(false);
      const onClose = () => done(false); // Escape
      $('confirm-ok').addEventListener('click', onOk);
      $('confirm-cancel').addEventListener('click', onCancel);
      dialog.addEventListener('close', onClose);
      dialog.showModal();
      $('confirm-cancel').focus();
    });
  }

  // ---- views ---------------------------------------------------------------------

  const VIEWS = ['sign-in-view', 'operator-view', 'config-view', 'audit-view', 'keys-view'];
  /** The operator's navigation: a view and its link. */
  const NAV = { 'operator-view': 'nav-operator', 'audit-view': 'nav-audit', 'keys-view': 'nav-keys' };

  function show(view) {
    for (const id of VIEWS) $(id).hidden = id !== view;
    const signedIn = view !== 'sign-in-view';
    $('session').hidden = !signedIn;
    $('operator-nav').hidden = !signedIn || state.role !== 'operator';
    for (const [id, link] of Object.entries(NAV)) {
      if (id === view) $(link).setAttribute('aria-current', 'page');
      else $(link).removeAttribute('aria-current');
    }
    if (signedIn) {
      $('session-role').textContent = state.role === 'operator'
        ? 'Signed in with an operator token'
        : 'Signed in with a domain token';
    }
  }

  function route() {
    if (ops) ops.leave();
    if (!state.token || !state.role) {
      show('sign-in-view');
      $('token').focus();
      return;
    }
    if (state.role === 'domain') {
      openConfig(null);
      return;
    }
    const hash = window.location.hash;
    if (ops && hash === '#/audit') {
      ops.openAudit();
      return;
    }
    if (ops && hash === '#/keys') {
      ops.openKeys();
      return;
    }
    if (hash.startsWith(DOMAIN_ROUTE)) {
      let name = null;
      try {
        name = decodeURIComponent(hash.slice(DOMAIN_ROUTE.length));
      } catch {
        name = null;
      }
      if (name) {
        openConfig(name);
        return;
      }
    }
    openOperator();
  }

  // ---- sign in / out -------------------------------------------------------------

  /**
   * Which kind of token, asked of the server (`GET /auth/whoami/` answers any
   * valid token): nothing is tried that the token may not do.
   */
  async function detectRole(token) {
    const previous = state.token;
    state.token = token;
    try {
      const res = await request('GET', WHOAMI_PATH);
      if (res.status === 200 && res.data && (res.data.kind === 'operator' || res.data.kind === 'domain')) {
        return res.data.kind;
      }
      throw new ApiError(res.status, res.data);
    } catch (err) {
      state.token = previous;
      throw err;
    }
  }

  async function onSignIn(event) {
    event.preventDefault();
    const form = $('sign-in-form');
    const input = $('token');
    clearFieldErrors(form);
    clearAnnouncements();
    const token = input.value.trim();
    if (!token) {
      showFailure(form, new ApiError(400, { token: ['Paste a token first.'] }), 'Not signed in');
      return;
    }
    await busy(form, async () => {
      try {
        state.role = await detectRole(token);
      } catch (err) {
        if (err instanceof ApiError && err.status === 401) {
          showFailure(form, new ApiError(400, {
            token: ['This token is not accepted: it is unknown, revoked, or mistyped.'],
          }), 'Not signed in');
        } else {
          showFailure(form, err, 'Not signed in');
        }
        return;
      }
      state.token = token;
      input.value = '';
      try {
        window.sessionStorage.setItem(TOKEN_KEY, token);
      } catch {
        // Storage disabled: the session lasts until this page is left.
      }
      announce(state.role === 'operator'
        ? 'Signed in with an operator token.'
        : 'Signed in with a domain token.');
      route();
    });
  }

  function resetForms() {
    for (const form of document.querySelectorAll('form')) {
      form.reset();
      clearFieldErrors(form);
    }
    hideNewToken();
    if (sso) sso.reset();
    if (ops) ops.reset();
    $('domain-list').replaceChildren();
    $('token-list').replaceChildren();
    $('token-target').replaceChildren();
    state.domains = [];
    state.tokens = [];
    state.config = null;
    state.editing = null;
  }

  function signOut(message) {
    try {
      window.sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // nothing stored
    }
    state.token = null;
    state.role = null;
    resetForms();
    if (window.location.hash) {
      window.history.replaceState(null, '', window.location.pathname);
    }
    show('sign-in-view');
    if (message) announceError(message);
    else announce('Signed out. The token was removed from this tab.');
    $('token').focus();
  }

  // ---- the OIDC configuration ----------------------------------------------------

  function configField(name) {
    return $(`cfg-${name}`);
  }

  function fillConfig(config) {
    state.config = config;
    const form = $('config-form');
    clearFieldErrors(form);
    configField('client_id').value = config ? config.client_id || '' : '';
    for (const name of URL_FIELDS) {
      configField(name).value = config && typeof config[name] === 'string' ? config[name] : '';
    }
    const secret = configField('client_secret');
    secret.value = '';
    secret.placeholder = config ? 'unchanged' : 'required';
    $('secret-masked').textContent = config ? String(config.client_secret_masked || '') : '';
    $('secret-stored').hidden = !config;
    $('secret-none').hidden = Boolean(config);
    $('config-delete').hidden = !config;
    $('provider-card').hidden = !config;
    $('test-summary').textContent = '';
    $('test-steps').replaceChildren();
    const stateLine = $('config-state');
    if (config) {
      stateLine.replaceChildren(
        'Created ', timeEl(config.created_at), ' · last updated ', timeEl(config.updated_at), '.',
      );
    } else {
      stateLine.textContent = 'No configuration stored yet: enter the client ID and secret to create it.';
    }
  }

  /**
   * After a 404 on the config: does the domain exist (so there is just no
   * config yet)? Told by status codes, not by the answer's wording: a domain
   * token's own domain exists while the token is accepted; an operator asks the
   * domain list.
   */
  async function domainExists(domainName) {
    if (state.role === 'domain') return true;
    try {
      const data = await api('GET', DOMAINS_PATH);
      state.domains = Array.isArray(data) ? data : [];
    } catch {
      return false;
    }
    const wanted = String(domainName || '').toLowerCase().replace(/\.$/, '');
    return state.domains.some((d) => d.domain === wanted);
  }

  async function openConfig(domainName) {
    state.editing = domainName;
    fillConfig(null);
    $('config-form').hidden = true;
    $('back-row').hidden = state.role !== 'operator';
    $('config-title').textContent = domainName
      ? `Single sign-on for ${domainName}`
      : 'Single sign-on configuration';
    $('config-state').textContent = 'Loading…';
    show('config-view');
    focusHeading('config-title');
    if (sso) sso.openConfig();
    try {
      const config = await api('GET', CONFIG_PATH, { domain: domainName });
      fillConfig(config);
      $('config-form').hidden = false;
    } catch (err) {
      if (!(err instanceof ApiError) || err.status === 401) return;
      if (err.status === 404 && await domainExists(domainName)) {
        // No configuration yet: the expected state of a new domain.
        fillConfig(null);
        $('config-form').hidden = false;
        return;
      }
      if (!state.token) return; // signed out meanwhile (401)
      $('config-state').textContent = '';
      announceError(err.status === 404 && domainName
        ? `The domain ${domainName} does not exist (any more).`
        : `Could not load the configuration: ${err.message}`);
    }
  }

  async function onSaveConfig(event) {
    event.preventDefault();
    const form = $('config-form');
    clearAnnouncements();
    const body = { client_id: configField('client_id').value };
    for (const name of URL_FIELDS) {
      const value = configField(name).value.trim();
      body[name] = value === '' ? null : value;
    }
    const secret = configField('client_secret');
    // Write-only: sent only when typed into; empty means "unchanged".
    if (secret.value !== '') body.client_secret = secret.value;
    const created = !state.config;
    await busy(form, async () => {
      try {
        const config = await api('POST', CONFIG_PATH, { body, domain: state.editing });
        fillConfig(config);
        announce(`${created ? 'Created' : 'Saved'}. The client secret is stored as ${config.client_secret_masked}.`);
      } catch (err) {
        if (err instanceof ApiError && err.status === 401) return;
        showFailure(form, err, 'Not saved');
      }
    });
  }

  async function onDeleteConfig() {
    const form = $('config-form');
    const which = state.editing ? ` of ${state.editing}` : '';
    const ok = await confirmAction(
      'Delete the configuration?',
      `The single sign-on configuration${which}, with its client secret, is deleted. This cannot be undone.`,
      'Delete configuration',
    );
    if (!ok) return;
    clearAnnouncements();
    await busy(form, async () => {
      try {
        await api('DELETE', CONFIG_PATH, { domain: state.editing });
        fillConfig(null);
        announce('Configuration deleted.');
        configField('client_id').focus();
      } catch (err) {
        if (err instanceof ApiError && err.status === 401) return;
        showFailure(form, err, 'Not deleted');
      }
    });
  }

  // ---- the identity provider: test connection, refresh from discovery ---------------

  const STEP_MARK = { pass: '✓ passed', fail: '✗ failed', skip: '– skipped' };

  function renderSteps(result) {
    const list = $('test-steps');
    list.replaceChildren(...result.steps.map((step) => {
      const provider = step.provider_error
        ? [el('br'), 'Provider said: ', el('code', {}, [step.provider_error.error, step.provider_error.error_description].filter(Boolean).join(': ') || `HTTP ${step.provider_error.status}`)]
        : [];
      return el('li', { class: `step step-${step.status}` },
        el('strong', {}, `${STEP_MARK[step.status] || step.status} · ${step.name}`),
        step.url ? el('span', { class: 'muted' }, ` (${step.url})`) : '',
        el('br'), step.detail, ...provider);
    }));
    $('test-summary').textContent = result.ok
      ? 'Connection test passed.'
      : 'Connection test failed: see the steps marked ✗.';
  }

  async function onTestConnection() {
    const card = $('provider-card');
    clearAnnouncements();
    $('test-summary').textContent = 'Testing…';
    $('test-steps').replaceChildren();
    await busy(card, async () => {
      try {
        const result = await api('POST', `${CONFIG_PATH}test/`, { domain: state.editing });
        renderSteps(result);
        (result.ok ? announce : announceError)(result.ok
          ? 'Connection test passed.'
          : 'Connection test failed: see the steps below.');
      } catch (err) {
        $('test-summary').textContent = '';
        if (err instanceof ApiError && err.status === 401) return;
        announceError(`Connection test not run: ${err.message}`);
      }
    });
  }

  async function onRefreshDiscovery() {
    const card = $('provider-card');
    clearAnnouncements();
    $('test-steps').replaceChildren();
    await busy(card, async () => {
      try {
        const result = await api('POST', `${CONFIG_PATH}refresh/`, { domain: state.editing });
        fillConfig(result.config);
        const changed = result.changed.map((c) => c.field);
        const kept = result.kept.map((k) => k.field);
        const text = [
          changed.length ? `Updated from discovery: ${changed.join(', ')}.` : 'Discovery is unchanged.',
          kept.length ? `Kept (set by hand): ${kept.join(', ')}.` : '',
        ].filter(Boolean).join(' ');
        $('test-summary').textContent = text;
        announce(text);
      } catch (err) {
        if (err instanceof ApiError && err.status === 401) return;
        showFailure($('config-form'), err, 'Not refreshed');
      }
    });
  }

  // ---- operator: domains and tokens ----------------------------------------------

  function sessionTokenId() {
    const m = /^ovt_(\d+)_/.exec(state.token || '');
    return m ? Number(m[1]) : null;
  }

  function renderDomains() {
    const list = $('domain-list');
    list.replaceChildren(...state.domains.map((d) => el('li', { class: 'row' },
      el('div', { class: 'row-main' },
        el('span', { class: 'row-title' }, d.domain),
        el('span', { class: 'row-meta' }, `id ${d.id} · added `, timeEl(d.created_at))),
      el('div', { class: 'actions' },
        el('a', { href: DOMAIN_ROUTE + encodeURIComponent(d.domain), 'aria-label': `Configure single sign-on for ${d.domain}` }, 'Configure SSO'),
        el('button', {
          type: 'button',
          class: 'danger',
          'aria-label': `Remove ${d.domain}`,
          onclick: () => removeDomain(d),
        }, 'Remove')))));
    $('domains-empty').hidden = state.domains.length > 0;

    const select = $('token-target');
    const previous = select.value;
    select.replaceChildren(
      ...state.domains.map((d) => el('option', { value: `domain:${d.domain}` }, `Domain ${d.domain}`)),
      el('option', { value: 'operator' }, 'Operator (full access)'),
    );
    if ([...select.options].some((o) => o.value === previous)) select.value = previous;
  }

  function renderTokens() {
    const mine = sessionTokenId();
    const list = $('token-list');
    list.replaceChildren(...state.tokens.map((t) => {
      const who = t.domain === null || t.domain === undefined ? 'Operator' : `Domain ${t.domain}`;
      const title = el('span', { class: 'row-title' }, `Token #${t.id} · ${who}`);
      if (t.id === mine) title.append(el('span', { class: 'tag' }, 'this session'));
      return el('li', { class: 'row' },
        el('div', { class: 'row-main' },
          title,
          el('span', { class: 'row-meta' }, 'created ', timeEl(t.created_at))),
        el('div', { class: 'actions' },
          el('button', {
            type: 'button',
            class: 'danger',
            'aria-label': `Revoke token #${t.id} (${who})`,
            onclick: () => revokeToken(t),
          }, 'Revoke')));
    }));
    $('tokens-empty').hidden = state.tokens.length > 0;
  }

  async function loadDomains() {
    const data = await api('GET', DOMAINS_PATH);
    state.domains = Array.isArray(data) ? data : [];
    renderDomains();
  }

  async function loadTokens() {
    const data = await api('GET', TOKENS_PATH);
    state.tokens = Array.isArray(data) ? data : [];
    renderTokens();
  }

  async function refreshOperator() {
    try {
      await Promise.all([loadDomains(), loadTokens()]);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return;
      announceError(`Could not load domains and tokens: ${err.message}`);
    }
  }

  async function openOperator() {
    state.editing = null;
    show('operator-view');
    focusHeading('operator-title');
    renderDomains();
    if (sso) sso.openOperator();
    await refreshOperator();
  }

  async function onAddDomain(event) {
    event.preventDefault();
    const form = $('add-domain-form');
    const input = $('new-domain');
    clearAnnouncements();
    await busy(form, async () => {
      try {
        const d = await api('POST', DOMAINS_PATH, { body: { domain: input.value.trim() } });
        clearFieldErrors(form);
        input.value = '';
        await refreshOperator();
        announce(`Domain ${d.domain} added.`);
      } catch (err) {
        if (err instanceof ApiError && err.status === 401) return;
        showFailure(form, err, 'Domain not added');
      }
    });
    input.focus();
  }

  async function removeDomain(d) {
    const ok = await confirmAction(
      `Remove ${d.domain}?`,
      `The domain ${d.domain} is removed with its single sign-on configuration and all its tokens. This cannot be undone.`,
      'Remove domain',
    );
    if (!ok) return;
    clearAnnouncements();
    try {
      await api('DELETE', `${DOMAINS_PATH}${encodeURIComponent(d.id)}/`);
      await refreshOperator();
      announce(`Domain ${d.domain} removed, with its configuration and tokens.`);
      focusHeading('domains-title');
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return;
      announceError(`Domain not removed: ${err.message}`);
    }
  }

  function hideNewToken() {
    $('new-token-value').value = '';
    $('new-token-for').textContent = '';
    $('new-token').hidden = true;
  }

  async function onCreateToken(event) {
    event.preventDefault();
    const form = $('create-token-form');
    const target = $('token-target').value;
    clearAnnouncements();
    hideNewToken();
    const body = target === 'operator' ? { operator: true } : { domain: target.replace(/^domain:/, '') };
    await busy(form, async () => {
      try {
        const created = await api('POST', TOKENS_PATH, { body });
        clearFieldErrors(form);
        const who = created.domain ? `domain ${created.domain}` : 'an operator';
        $('new-token-for').textContent = who;
        $('new-token-value').value = created.token;
        $('new-token').hidden = false;
        await refreshOperator();
        announce(`Token #${created.id} created for ${who}. Copy it now: it will not be shown again.`);
        $('new-token-value').focus();
        $('new-token-value').select();
      } catch (err) {
        if (err instanceof ApiError && err.status === 401) return;
        showFailure(form, err, 'Token not created');
      }
    });
  }

  async function onCopyToken() {
    const input = $('new-token-value');
    try {
      await navigator.clipboard.writeText(input.value);
      announce('Token copied to the clipboard.');
    } catch {
      input.focus();
      input.select();
      announceError('Could not copy automatically: the token is selected, press Ctrl+C (or ⌘C) to copy it.');
    }
  }

  function onTokenDone() {
    hideNewToken();
    announce('The new token is hidden; it cannot be shown again.');
    focusHeading('tokens-title');
  }

  async function revokeToken(t) {
    const mine = t.id === sessionTokenId();
    const ok = await confirmAction(
      `Revoke token #${t.id}?`,
      mine
        ? 'This is the token this session signed in with: you will be signed out. Whoever uses it loses access at once.'
        : 'Whoever uses this token loses access at once. This cannot be undone.',
      'Revoke token',
    );
    if (!ok) return;
    clearAnnouncements();
    try {
      await api('DELETE', `${TOKENS_PATH}${encodeURIComponent(t.id)}/`);
      if (mine) {
        signOut('You revoked the token this session used; you are signed out.');
        return;
      }
      await refreshOperator();
      announce(`Token #${t.id} revoked.`);
      focusHeading('tokens-title');
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return;
      announceError(`Token not revoked: ${err.message}`);
    }
  }

  // ---- start ---------------------------------------------------------------------

  /**
   * Sign-in through the appliance (applications, callback URL, Try sign-in) is
   * ui/sso.js, loaded before this file: it gets these helpers.
   */
  const sso = typeof window.oidcvaultSso === 'function'
    ? window.oidcvaultSso(Object.freeze({
      $, el, api, timeEl, announce, announceError, clearAnnouncements, showFailure, clearFieldErrors, busy,
      confirmAction, focusHeading, ApiError, editing: () => state.editing,
    }))
    : null;

  /** The operator's audit trail and key terms are ui/ops.js, loaded before this file. */
  const ops = typeof window.oidcvaultOps === 'function'
    ? window.oidcvaultOps(Object.freeze({
      $, el, api, timeEl, announce, announceError, clearAnnouncements, showFailure, clearFieldErrors, busy,
      confirmAction, focusHeading, ApiError, show,
    }))
    : null;

  async function start() {
    if (sso) sso.bind();
    if (ops) ops.bind();
    $('sign-in-form').addEventListener('submit', onSignIn);
    $('sign-out').addEventListener('click', () => signOut(null));
    $('config-form').addEventListener('submit', onSaveConfig);
    $('config-delete').addEventListener('click', onDeleteConfig);
    $('config-test').addEventListener('click', onTestConnection);
    $('config-refresh').addEventListener('click', onRefreshDiscovery);
    $('add-domain-form').addEventListener('submit', onAddDomain);
    $('create-token-form').addEventListener('submit', onCreateToken);
    $('copy-token').addEventListener('click', onCopyToken);
    $('new-token-done').addEventListener('click', onTokenDone);
    window.addEventListener('hashchange', () => {
      clearAnnouncements();
      route();
    });

    let saved = null;
    try {
      saved = window.sessionStorage.getItem(TOKEN_KEY);
    } catch {
      saved = null;
    }
    if (saved) {
      try {
        state.role = await detectRole(saved);
        state.token = saved;
      } catch (err) {
        state.role = null;
        state.token = null;
        if (err instanceof ApiError && err.status === 401) {
          signOut('Your token is no longer accepted (revoked, or its domain removed). Sign in again.');
          return;
        }
        show('sign-in-view');
        announceError(`Could not check the saved token: ${err.message}`);
        return;
      }
    }
    route();
  }

  start();
})();
