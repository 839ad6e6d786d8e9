// oidcvault admin page: sign-in through the appliance (the broker). The operator's
// applications (the products that send users here to sign in), the callback URL
// to register at a domain's identity provider, and "Try sign-in".
//
// Loaded before app.js, which calls `window.oidcvaultSso(ui)` with its helpers
// (the same DOM-by-text rules: nothing from the server is ever parsed as HTML)
// and gets back the hooks it calls when a view opens or the session ends.
// An application's client secret is shown once, in a read-only field, and
// removed from the page when hidden or on sign-out.
'use strict';

window.oidcvaultSso = (ui) => {
  const {
    $, el, api, timeEl, announce, announceError, clearAnnouncements, showFailure, clearFieldErrors, busy, confirmAction,
    focusHeading, ApiError,
  } = ui;
  const APPS_PATH = '/api/v1/admin/apps/';
  const SSO_PATH = '/api/v1/sso/';
  const SIGN_IN_TEST_PATH = '/api/v1/enterprises/oidc/sign-in-test/';

  let apps = [];
  /** `GET /api/v1/sso/` once per session: {public_url, callback_url}. */
  let sso = null;

  const signedOut = (err) => err instanceof ApiError && err.status === 401;

  // ---- applications (operator) -----------------------------------------------------

  function renderApps() {
    $('app-list').replaceChildren(...apps.map((a) => {
      const uris = Array.isArray(a.redirect_uris) ? a.redirect_uris : [];
      return el('li', { class: 'row' },
        el('div', { class: 'row-main' },
          el('span', { class: 'row-title' }, a.name),
          el('span', { class: 'row-meta' }, `id ${a.id} · client ID `, el('code', {}, a.client_id), ' · added ', timeEl(a.created_at)),
          el('span', { class: 'row-meta' }, uris.length === 1 ? 'Redirect URI: ' : 'Redirect URIs: ',
            ...uris.flatMap((u, i) => [i ? ', ' : '', el('code', { class: 'uri' }, u)]))),
        el('div', { class: 'actions' },
          el('button', {
            type: 'button',
            class: 'danger',
            'aria-label': `Remove application ${a.name}`,
            onclick: () => removeApp(a),
          }, 'Remove')));
    }));
    $('apps-empty').hidden = apps.length > 0;
  }

  async function loadApps() {
    try {
      const data = await api('GET', APPS_PATH);
      apps = Array.isArray(data) ? data : [];
      renderApps();
    } catch (err) {
      if (signedOut(err)) return;
      announceError(`Could not load the applications: ${err.message}`);
    }
  }

  function hideNewApp() {
    $('new-app-client_id').value = '';
    $('new-app-client_secret').value = '';
    $('new-app-for').textContent = '';
    $('new-app').hidden = true;
  }

  async function onAddApp(event) {
    event.preventDefault();
    const form = $('add-app-form');
    clearAnnouncements();
    hideNewApp();
    const body = {
      name: $('new-app-name').value.trim(),
      redirect_uris: $('new-app-redirect_uris').value.split('\n').map((u) => u.trim()).filter(Boolean),
    };
    await busy(form, async () => {
      try {
        const created = await api('POST', APPS_PATH, { body });
        clearFieldErrors(form);
        form.reset();
        $('new-app-for').textContent = created.name;
        $('new-app-client_id').value = created.client_id;
        $('new-app-client_secret').value = created.client_secret;
        $('new-app').hidden = false;
        await loadApps();
        announce(`Application ${created.name} added. Copy its client secret now: it will not be shown again.`);
        $('new-app-client_secret').focus();
        $('new-app-client_secret').select();
      } catch (err) {
        if (signedOut(err)) return;
        showFailure(form, err, 'Application not added');
      }
    });
  }

  async function removeApp(a) {
    const ok = await confirmAction(
      `Remove application ${a.name}?`,
      `${a.name} can no longer start sign-ins or redeem codes (client ID ${a.client_id}). This cannot be undone.`,
      'Remove application',
    );
    if (!ok) return;
    clearAnnouncements();
    try {
      await api('DELETE', `${APPS_PATH}${encodeURIComponent(a.id)}/`);
      await loadApps();
      announce(`Application ${a.name} removed.`);
      focusHeading('apps-title');
    } catch (err) {
      if (signedOut(err)) return;
      announceError(`Application not removed: ${err.message}`);
    }
  }

  async function copyField(id, what) {
    const input = $(id);
    try {
      await navigator.clipboard.writeText(input.value || input.textContent);
      announce(`${what} copied to the clipboard.`);
    } catch {
      if (input.select) {
        input.focus();
        input.select();
      }
      announceError(`Could not copy automatically: select the ${what.toLowerCase()} and press Ctrl+C (or ⌘C).`);
    }
  }

  // ---- a domain's page: the callback URL and Try sign-in ----------------------------

  function renderCallback() {
    const url = sso && typeof sso.callback_url === 'string' ? sso.callback_url : null;
    $('callback-url').textContent = url || '';
    $('callback-row').hidden = !url;
    $('callback-hint').hidden = !url;
    $('callback-missing').hidden = Boolean(url) || !sso;
  }

  async function showCallback() {
    $('try-link').hidden = true;
    $('try-link').replaceChildren();
    renderCallback();
    if (sso) return;
    try {
      sso = await api('GET', SSO_PATH);
      renderCallback();
    } catch (err) {
      if (signedOut(err)) return;
      announceError(`Could not read the callback URL: ${err.message}`);
    }
  }

  async function onTrySignIn() {
    const card = $('provider-card');
    const link = $('try-link');
    clearAnnouncements();
    link.hidden = true;
    link.replaceChildren();
    await busy(card, async () => {
      try {
        // Same-origin credentials: the answer's cookie binds this browser to
        // the sign-in, which the callback in the new tab checks.
        const started = await api('POST', SIGN_IN_TEST_PATH, { body: {}, domain: ui.editing(), credentials: 'same-origin' });
        const url = started && typeof started.authorization_url === 'string' ? started.authorization_url : '';
        if (!/^https?:\/\//i.test(url)) throw new Error('the server answered without an authorization URL.');
        window.open(url, '_blank', 'noopener,noreferrer');
        link.replaceChildren('No new tab? ', el('a', { href: url, target: '_blank', rel: 'noopener noreferrer' }, 'Open the sign-in test'), '.');
        link.hidden = false;
        announce('The sign-in test opened in a new tab: sign in at the identity provider there; the tab then shows the profile and each check.');
      } catch (err) {
        if (signedOut(err)) return;
        announceError(`Sign-in test not started: ${err.message}`);
      }
    });
  }

  // ---- hooks -------------------------------------------------------------------------

  function reset() {
    hideNewApp();
    apps = [];
    sso = null;
    $('app-list').replaceChildren();
    $('try-link').replaceChildren();
    $('try-link').hidden = true;
  }

  function bind() {
    $('add-app-form').addEventListener('submit', onAddApp);
    $('new-app-done').addEventListener('click', () => {
      hideNewApp();
      announce('The client secret is hidden; it cannot be shown again.');
      focusHeading('apps-title');
    });
    $('copy-app-client-id').addEventListener('click', () => copyField('new-app-client_id', 'Client ID'));
    $('copy-app-secret').addEventListener('click', () => copyField('new-app-client_secret', 'Client secret'));
    $('copy-callback').addEventListener('click', () => copyField('callback-url', 'Callback URL'));
    $('try-sign-in').addEventListener('click', onTrySignIn);
  }

  return { bind, openOperator: loadApps, openConfig: showCallback, reset };
};
