// oidcvault admin page: the operator's views of running the appliance. The audit
// trail (`GET /api/v1/admin/audit/`: filters by domain, action and time, paged by
// the server's cursor) and the data-key terms (`GET /api/v1/admin/keys/`, with
// "Rotate now" and the re-encryption's progress, polled while it runs).
//
// Loaded before app.js, which calls `window.oidcvaultOps(ui)` with its helpers
// (the same DOM-by-text rules: nothing from the server is ever parsed as HTML)
// and gets back the hooks it calls when a view opens or the session ends. The
// audit trail holds no secret or token by design (ids, names, field names and a
// keyed fingerprint); the page shows exactly those fields.
'use strict';

window.oidcvaultOps = (ui) => {
  const {
    $, el, api, timeEl, announce, announceError, clearAnnouncements, showFailure, clearFieldErrors, busy,
    confirmAction, focusHeading, ApiError, show,
  } = ui;
  const AUDIT_PATH = '/api/v1/admin/audit/';
  const KEYS_PATH = '/api/v1/admin/keys/';
  const ROTATE_PATH = '/api/v1/admin/keys/rotate';
  const DOMAINS_PATH = '/api/v1/admin/domains/';
  /** How often the key status is asked for while a re-encryption runs. */
  const POLL_MS = 500;

  const signedOut = (err) => err instanceof ApiError && err.status === 401;

  // ---- the audit trail -------------------------------------------------------------

  /**
   * The filters of the page shown, and the cursors of the pages before it:
   * `cursors[i]` is the cursor that fetched page i + 1 (null for the first).
   */
  let audit = { filters: null, cursors: [null], next: null };

  /** `datetime-local` (this browser's time zone) to RFC 3339 in UTC, or null. */
  function instant(input) {
    const value = input.value.trim();
    if (!value) return null;
    const when = new Date(value);
    return Number.isNaN(when.getTime()) ? value : when.toISOString();
  }

  function readFilters() {
    const filters = {
      domain: $('audit-domain').value.trim(),
      action: $('audit-action').value.trim(),
      since: instant($('audit-since')),
      until: instant($('audit-until')),
      limit: $('audit-limit').value,
    };
    return Object.fromEntries(Object.entries(filters).filter(([, v]) => v !== null && v !== ''));
  }

  function auditPath(filters, cursor) {
    const params = new URLSearchParams(filters);
    if (cursor) params.set('cursor', cursor);
    return `${AUDIT_PATH}?${params}`;
  }

  /** The actor: the API token's id; none for the command line, the server itself or an application. */
  const actorText = (actor) => (actor === null || actor === undefined ? 'no token' : `token #${actor}`);

  function renderEvents(page) {
    const events = Array.isArray(page.results) ? page.results : [];
    // data-label: the column's name, shown beside each cell at phone width.
    $('audit-rows').replaceChildren(...events.map((e) => el('tr', { 'data-event-id': e.id },
      el('td', { 'data-label': 'Time' }, timeEl(e.at)),
      el('td', { class: 'nowrap', 'data-label': 'Actor' }, actorText(e.actor)),
      el('td', { class: 'nowrap', 'data-label': 'Action' }, el('code', { class: 'action' }, e.action)),
      el('td', { class: 'nowrap', 'data-label': 'Domain' },
        e.domain || (e.domain_id !== null && e.domain_id !== undefined ? `id ${e.domain_id}` : '—')),
      el('td', { 'data-label': 'Fields changed' }, Array.isArray(e.fields) && e.fields.length ? e.fields.join(', ') : '—'),
      el('td', { 'data-label': 'Fingerprint' },
        e.secret_fingerprint ? el('code', { class: 'fingerprint' }, e.secret_fingerprint) : '—'),
      el('td', { class: 'detail', 'data-label': 'Detail' }, e.detail || ''))));
    const number = audit.cursors.length;
    const described = Object.entries(audit.filters)
      .filter(([k]) => k !== 'limit')
      .map(([k, v]) => `${k} ${v}`);
    $('audit-summary').textContent = events.length
      ? `Page ${number}: ${events.length} event${events.length === 1 ? '' : 's'}, oldest first`
        + `${described.length ? ` (${described.join(', ')})` : ''}${page.next ? '; more on the next page' : ''}.`
      : `No events${number > 1 ? ' on this page' : ''} match these filters.`;
    $('audit-table').hidden = events.length === 0;
  }

  /** Fetch the page `cursors.at(-1)` of `audit.filters`. */
  async function loadAuditPage() {
    const form = $('audit-form');
    const cursor = audit.cursors[audit.cursors.length - 1];
    const page = await api('GET', auditPath(audit.filters, cursor));
    clearFieldErrors(form);
    audit.next = page.next || null;
    renderEvents(page);
  }

  /** The pager follows the page shown (and is off while a page loads). */
  function setPager(loading) {
    $('audit-prev').disabled = loading || audit.cursors.length <= 1;
    $('audit-next').disabled = loading || !audit.next;
  }

  async function runAudit(work, what) {
    const form = $('audit-form');
    setPager(true);
    await busy(form, async () => {
      try {
        await work();
      } catch (err) {
        if (signedOut(err)) return;
        showFailure(form, err, what);
      } finally {
        setPager(false);
      }
    });
  }

  async function onFilter(event) {
    event.preventDefault();
    clearAnnouncements();
    const previous = audit;
    audit = { filters: readFilters(), cursors: [null], next: null };
    await runAudit(async () => {
      try {
        await loadAuditPage();
      } catch (err) {
        audit = previous;
        throw err;
      }
    }, 'Not filtered');
  }

  async function onNextPage() {
    if (!audit.next) return;
    clearAnnouncements();
    audit.cursors.push(audit.next);
    await runAudit(async () => {
      try {
        await loadAuditPage();
      } catch (err) {
        audit.cursors.pop();
        throw err;
      }
    }, 'Next page not loaded');
    focusHeading('audit-results-title');
  }

  async function onPreviousPage() {
    if (audit.cursors.length <= 1) return;
    clearAnnouncements();
    audit.cursors.pop();
    await runAudit(loadAuditPage, 'Previous page not loaded');
    focusHeading('audit-results-title');
  }

  async function onClearFilters() {
    $('audit-form').reset();
    clearFieldErrors($('audit-form'));
    clearAnnouncements();
    audit = { filters: readFilters(), cursors: [null], next: null };
    await runAudit(loadAuditPage, 'Not loaded');
  }

  async function openAudit() {
    stopPolling();
    show('audit-view');
    focusHeading('audit-title');
    if (!audit.filters) audit = { filters: readFilters(), cursors: [null], next: null };
    try {
      const domains = await api('GET', DOMAINS_PATH);
      $('audit-domains').replaceChildren(...(Array.isArray(domains) ? domains : [])
        .map((d) => el('option', { value: d.domain })));
    } catch (err) {
      if (signedOut(err)) return;
      // Only the suggestions are missing: the filter still takes any name.
    }
    await runAudit(loadAuditPage, 'Could not load the audit trail');
  }

  // ---- the key terms ----------------------------------------------------------------

  let pollTimer = null;
  let polling = false;
  /** The term a rotation started from this page made active, until it is done. */
  let rotatedTo = null;

  function stopPolling() {
    polling = false;
    if (pollTimer !== null) window.clearTimeout(pollTimer);
    pollTimer = null;
  }

  const percent = (progress) => Math.floor(Math.max(0, Math.min(1, Number(progress) || 0)) * 100);

  function renderKeys(status) {
    const terms = Array.isArray(status.terms) ? status.terms : [];
    const pct = percent(status.progress);
    $('keys-summary').textContent = `Term ${status.active_term} is active: new secrets are encrypted under it `
      + `(${status.active_term_encryptions} encryptions under it so far; the server rotates by itself after ${status.rotate_after_encryptions}). `
      + `${status.total_configs} stored configuration${status.total_configs === 1 ? '' : 's'}.`;
    $('keys-progress').value = pct;
    $('keys-progress-text').textContent = status.reencryption_pending
      ? `${pct} % re-encrypted under term ${status.active_term}…`
      : `${pct} % under term ${status.active_term}: re-encryption complete.`;
    $('keys-rows').replaceChildren(...terms.map((t) => el('tr', { 'data-term': t.term },
      el('td', { 'data-label': 'Term' }, String(t.term)),
      el('td', { 'data-label': 'State' }, t.active ? el('span', { class: 'tag' }, 'active') : 'being retired'),
      el('td', { 'data-label': 'Created' }, timeEl(t.created_at)),
      el('td', { 'data-label': 'Configurations' }, String(t.configs)))));
  }

  async function loadKeys() {
    const status = await api('GET', KEYS_PATH);
    renderKeys(status);
    return status;
  }

  /** Ask again every POLL_MS while a re-encryption runs and the view is open. */
  function pollKeys() {
    stopPolling();
    polling = true;
    const tick = async () => {
      if (!polling) return;
      let status;
      try {
        status = await loadKeys();
      } catch (err) {
        stopPolling();
        if (!signedOut(err)) announceError(`Could not read the key status: ${err.message}`);
        return;
      }
      if (!polling) return;
      if (status.reencryption_pending) {
        pollTimer = window.setTimeout(tick, POLL_MS);
        return;
      }
      stopPolling();
      if (rotatedTo !== null) {
        announce(`Re-encryption complete: every configuration is under term ${status.active_term}; the old term was dropped.`);
        rotatedTo = null;
      }
    };
    pollTimer = window.setTimeout(tick, POLL_MS);
  }

  async function onRotate() {
    const ok = await confirmAction(
      'Rotate the data key now?',
      'A new key term becomes active at once for every new secret; the stored client secrets are re-encrypted '
        + 'under it in the background, then the old term is dropped. Sign-ins and saves go on meanwhile. '
        + 'Take a backup afterwards: an older backup needs the old key file.',
      'Rotate now',
    );
    if (!ok) return;
    clearAnnouncements();
    const card = $('keys-card');
    await busy(card, async () => {
      try {
        const status = await api('POST', ROTATE_PATH);
        rotatedTo = status.active_term;
        renderKeys(status);
        announce(`Rotated: term ${status.active_term} is active.${status.reencryption_pending ? ' Re-encrypting the stored secrets…' : ''}`);
        pollKeys();
      } catch (err) {
        if (signedOut(err)) return;
        announceError(`Not rotated: ${err.message}`);
      }
    });
  }

  async function openKeys() {
    stopPolling();
    show('keys-view');
    focusHeading('keys-title');
    try {
      const status = await loadKeys();
      if (status.reencryption_pending) pollKeys();
    } catch (err) {
      if (signedOut(err)) return;
      announceError(`Could not read the key status: ${err.message}`);
    }
  }

  // ---- hooks ------------------------------------------------------------------------

  function reset() {
    stopPolling();
    rotatedTo = null;
    audit = { filters: null, cursors: [null], next: null };
    $('audit-rows').replaceChildren();
    $('audit-domains').replaceChildren();
    $('audit-summary').textContent = '';
    $('keys-rows').replaceChildren();
    $('keys-summary').textContent = '';
    $('keys-progress-text').textContent = '';
  }

  function bind() {
    $('audit-form').addEventListener('submit', onFilter);
    $('audit-clear').addEventListener('click', onClearFilters);
    $('audit-next').addEventListener('click', onNextPage);
    $('audit-prev').addEventListener('click', onPreviousPage);
    $('keys-rotate').addEventListener('click', onRotate);
    $('keys-refresh').addEventListener('click', async () => {
      clearAnnouncements();
      try {
        const status = await loadKeys();
        if (status.reencryption_pending && !polling) pollKeys();
      } catch (err) {
        if (!signedOut(err)) announceError(`Could not read the key status: ${err.message}`);
      }
    });
  }

  return { bind, openAudit, openKeys, leave: stopPolling, reset };
};
