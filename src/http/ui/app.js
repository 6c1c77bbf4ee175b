// countersign reviewer console. Plain JavaScript, no dependencies, nothing loaded from elsewhere.
// Everything shown comes from the REST API (docs/rest.md) and is written as text, never as HTML.
'use strict';

(() => {
  const TOKEN_KEY = 'countersign.token';
  const PAGE_SIZE = 50;
  const LIST_LIMIT = 1000;       // items per list request (the API's maximum)
  const MAX_ITEMS = 50000;       // a list this long is cut (say so) rather than hang the tab
  const $ = (id) => document.getElementById(id);

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    approver: '',
    scope: '',
    items: new Map(),            // id -> list item
    page: 0,
    truncated: false,
    stream: null,                // AbortController of the event stream
    lastEventId: '',
    detailId: '',                // the approval shown in the evidence pack
    detailShown: null,           // {job_hash, policy_snapshot} the page shows
    listeners: new Set(),        // event callbacks of the open page
    renderQueued: false,
  };

  // ---- small DOM helpers: text only ---------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function show(section) {
    for (const id of ['signin', 'list', 'detail']) $(id).hidden = id !== section;
  }

  function duration(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + 's';
    const m = Math.floor(s / 60);
    if (m < 60) return m + 'm ' + (s % 60) + 's';
    const h = Math.floor(m / 60);
    if (h < 48) return h + 'h ' + (m % 60) + 'm';
    return Math.floor(h / 24) + 'd ' + (h % 24) + 'h';
  }

  function age(at) {
    const t = Date.parse(at);
    return Number.isFinite(t) ? duration(Date.now() - t) : '-';
  }

  function timeLeft(expires) {
    if (!expires) return { text: 'no deadline', soon: false };
    const t = Date.parse(expires);
    if (!Number.isFinite(t)) return { text: '-', soon: false };
    const left = t - Date.now();
    if (left <= 0) return { text: 'past deadline', soon: true };
    return { text: duration(left), soon: left < 5 * 60 * 1000 };
  }

  // "k of n"; a per-group quorum ({"finance-leads":1,"security":1}) needs the sum, named.
  function votesText(item) {
    const votes = Array.isArray(item.votes) && item.votes.length ? item.votes.length
      : Array.isArray(item.approvals) ? item.approvals.length
        : (typeof item.votes === 'number' ? item.votes : 0);
    const q = item.quorum;
    if (item.unread) return '…';  // a row from a held event before its record is read
    if (q && typeof q === 'object') {
      const parts = Object.entries(q);
      const needed = parts.reduce((sum, [, n]) => sum + n, 0);
      return votes + ' of ' + needed + ' (' + parts.map(([g, n]) => g + ' ' + n).join(', ') + ')';
    }
    return votes + ' of ' + (typeof q === 'number' ? q : 1);
  }

  // NATS subject wildcards: `*` one token, `>` the rest. Without a wildcard: a substring match.
  function topicMatches(filter, topic) {
    if (!filter) return true;
    if (!filter.includes('*') && !filter.includes('>')) return topic.includes(filter);
    const f = filter.split('.');
    const t = topic.split('.');
    for (let i = 0; i < f.length; i++) {
      if (f[i] === '>') return t.length > i;
      if (i >= t.length) return false;
      if (f[i] !== '*' && f[i] !== t[i]) return false;
    }
    return f.length === t.length;
  }

  // ---- the API ------------------------------------------------------------------------------

  class Refused extends Error {}

  async function api(path, options = {}) {
    const headers = { Authorization: 'Bearer ' + state.token, Accept: 'application/json' };
    if (options.body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(path, {
      method: options.method || 'GET',
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      cache: 'no-store',
      credentials: 'omit',
      signal: options.signal,
    });
    let body = {};
    try { body = await response.json(); } catch (e) { body = {}; }
    if (response.status === 401 && !options.keep401) {
      signOut('token refused');
      throw new Refused('token refused');
    }
    return { status: response.status, body };
  }

  // ---- sign in / out ------------------------------------------------------------------------

  async function signIn(token) {
    state.token = token;
    let answer;
    try {
      answer = await api('/api/v1/whoami', { keep401: true });
    } catch (e) {
      return signOut('cannot reach countersign');
    }
    if (answer.status !== 200) return signOut('token refused');
    sessionStorage.setItem(TOKEN_KEY, token);
    state.approver = answer.body.approver || '';
    state.scope = answer.body.scope || 'read';
    $('who').textContent = state.approver + ' (' + state.scope + ')';
    $('signout').hidden = false;
    openStream();
    route();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = '';
    state.approver = '';
    state.scope = '';
    state.items.clear();
    state.loadedFilter = undefined;
    if (state.stream) state.stream.abort();
    state.stream = null;
    $('who').textContent = '';
    $('signout').hidden = true;
    $('live').hidden = true;
    $('rows').replaceChildren();
    $('detail-body').replaceChildren();
    $('token').value = '';
    const error = $('signin-error');
    error.textContent = message || '';
    error.hidden = !message;
    show('signin');
    $('token').focus();
  }

  // ---- live events: Server-Sent Events read with fetch, so the token stays in a header -------

  function openStream() {
    if (state.stream) state.stream.abort();
    const controller = new AbortController();
    state.stream = controller;
    (async () => {
      let delay = 1000;
      while (!controller.signal.aborted) {
        try {
          const headers = { Authorization: 'Bearer ' + state.token, Accept: 'text/event-stream' };
          if (state.lastEventId) headers['Last-Event-ID'] = state.lastEventId;
          const response = await fetch('/api/v1/events', {
            headers, cache: 'no-store', credentials: 'omit', signal: controller.signal,
          });
          if (response.status === 401) { signOut('token refused'); return; }
          if (response.status !== 200 || !response.body) throw new Error('status ' + response.status);
          delay = 1000;
          await readEvents(response.body.getReader());
        } catch (e) {
          if (controller.signal.aborted) return;
        }
        setLive(false);
        await new Promise((resolve) => setTimeout(resolve, delay));
        delay = Math.min(delay * 2, 15000);
      }
    })();
  }

  async function readEvents(reader) {
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let id = '';
        let event = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'id') id = text;
          else if (field === 'event') event = text;
          else if (field === 'data') data.push(text);
        }
        if (!data.length) continue;
        if (id) state.lastEventId = id;
        onStreamEvent(event, data.join('\n'));
      }
    }
  }

  function setLive(on) {
    const live = $('live');
    live.hidden = !state.token;
    live.textContent = on ? 'live' : 'reconnecting';
    live.classList.toggle('off', !on);
    document.body.dataset.live = on ? '1' : '0';
  }

  function onStreamEvent(name, data) {
    if (name === 'ready') {
      setLive(true);
      if (state.needsReload) { state.needsReload = false; reloadCurrent(); }
      return;
    }
    if (name === 'resync') {
      // Events were missed (reconnected too late, or read too slowly): reload what is shown.
      state.needsReload = true;
      return;
    }
    let event;
    try { event = JSON.parse(data); } catch (e) { return; }
    if (!event || typeof event.approval_id !== 'string') return;
    applyToList(event);
    for (const listener of state.listeners) listener(event);
  }

  const STATE_OF_EVENT = {
    held: 'pending', approved: 'approved', released: 'released', replayed: 'released',
    rejected: 'rejected', expired: 'expired', release_unknown: 'release_unknown',
  };

  function applyToList(event) {
    const id = event.approval_id;
    let item = state.items.get(id);
    if (event.event === 'held') {
      if (!item) {
        item = { id, state: 'pending', topic: event.topic || '', rule: event.rule || '', created_at: event.at || '' };
        state.items.set(id, item);
        item.fresh = true;
        item.unread = true;
        fillItem(item);
      } else {
        item.state = 'pending';
        item.rule = event.rule || item.rule;
        item.votes = 0;
      }
    } else if (item) {
      if (STATE_OF_EVENT[event.event] && !(event.event === 'approved' && item.state === 'released')) {
        item.state = STATE_OF_EVENT[event.event];
      }
      if (event.event === 'vote') item.votes = (typeof item.votes === 'number' ? item.votes : 0) + 1;
      item.fresh = true;
      item.changed = true;  // stays in view with its new state until the list is reloaded
    } else {
      return;
    }
    queueRender();
  }

  // A held event lacks the deadline and the requester: read them from the record.
  async function fillItem(item) {
    try {
      const answer = await api('/api/v1/approvals/' + encodeURIComponent(item.id));
      delete item.unread;
      if (answer.status !== 200 || !answer.body.record) { queueRender(); return; }
      const r = answer.body.record;
      item.expires_at = r.expires_at || '';
      item.requester = r.requester || '';
      item.created_at = r.created_at || item.created_at;
      if (Array.isArray(r.votes)) item.votes = Math.max(r.votes.length, (r.approvals || []).length);
      if (r.quorum !== undefined) item.quorum = r.quorum;
      queueRender();
    } catch (e) { delete item.unread; /* signed out */ }
  }

  // ---- the list -----------------------------------------------------------------------------

  // Back on the list: what the event stream kept up to date is shown as it is.
  function showList() {
    if (state.loadedFilter === $('state').value && document.body.dataset.live === '1') {
      show('list');
      document.title = 'Approvals - countersign';
      renderList();
      return;
    }
    loadList();
  }

  async function loadList() {
    show('list');
    document.title = 'Approvals - countersign';
    $('list-error').hidden = true;
    state.items.clear();
    state.loadedFilter = $('state').value;
    state.truncated = false;
    const filter = $('state').value;
    let after = '';
    try {
      for (;;) {
        let path = '/api/v1/approvals?limit=' + LIST_LIMIT;
        if (filter) path += '&state=' + encodeURIComponent(filter);
        if (after) path += '&after=' + encodeURIComponent(after);
        const answer = await api(path);
        if (answer.status !== 200) throw new Error(describeFailure(answer));
        for (const item of answer.body.items || []) state.items.set(item.id, item);
        after = answer.body.next_after || '';
        if (!after) break;
        if (state.items.size >= MAX_ITEMS) { state.truncated = true; break; }
      }
    } catch (e) {
      if (e instanceof Refused) return;
      const error = $('list-error');
      error.textContent = 'Could not load the list: ' + e.message;
      error.hidden = false;
    }
    renderList();
  }

  function visibleItems() {
    const filterState = $('state').value;
    const filterTopic = $('topic').value.trim();
    const out = [];
    for (const item of state.items.values()) {
      if (filterState && item.state !== filterState && !item.changed) continue;
      if (!topicMatches(filterTopic, item.topic || '')) continue;
      out.push(item);
    }
    // Newest first; ids break ties so the order is stable.
    out.sort((a, b) => (b.created_at || '').localeCompare(a.created_at || '') || (a.id < b.id ? -1 : 1));
    return out;
  }

  function queueRender() {
    if (state.renderQueued || $('list').hidden) return;
    state.renderQueued = true;
    requestAnimationFrame(() => { state.renderQueued = false; renderList(); });
  }

  function renderList() {
    const items = visibleItems();
    const pages = Math.max(1, Math.ceil(items.length / PAGE_SIZE));
    state.page = Math.min(state.page, pages - 1);
    const slice = items.slice(state.page * PAGE_SIZE, (state.page + 1) * PAGE_SIZE);
    const rows = slice.map((item) => {
      const left = item.state === 'pending' ? timeLeft(item.expires_at) : { text: '-', soon: false };
      const href = '/ui/approvals/' + encodeURIComponent(item.id);
      const row = el('tr', { 'data-id': item.id, class: item.fresh ? 'flash' : '' },
        el('td', { class: 'id', 'data-label': 'Approval' }, el('a', { href, text: item.id })),
        el('td', { class: 'mono', 'data-label': 'Topic', text: item.topic || '' }),
        el('td', { 'data-label': 'Rule', text: item.rule || '' }),
        el('td', { 'data-label': 'Requester', text: item.requester || '-' }),
        el('td', { 'data-label': 'Age', text: age(item.created_at) }),
        el('td', { class: 'left' + (left.soon ? ' soon' : ''), 'data-label': 'Time left', text: left.text }),
        el('td', { 'data-label': 'Votes', text: votesText(item) }),
        el('td', { 'data-label': 'State' }, el('span', { class: 'state ' + item.state, text: item.state.replace('_', ' ') })));
      row.addEventListener('click', (e) => {
        if (e.target.closest('a')) return;
        navigate(href);
      });
      item.fresh = false;
      return row;
    });
    $('rows').replaceChildren(...rows);
    $('empty').hidden = items.length > 0;
    $('count').textContent = items.length + (items.length === 1 ? ' approval' : ' approvals') +
      (state.truncated ? ' (list cut at ' + MAX_ITEMS + ': narrow the filters)' : '');
    $('page').textContent = 'page ' + (state.page + 1) + ' of ' + pages;
    $('prev').disabled = state.page === 0;
    $('next').disabled = state.page >= pages - 1;
  }

  // ---- the evidence pack --------------------------------------------------------------------

  function section(title, ...children) {
    return el('section', { class: 'card' }, el('h2', { text: title }), ...children);
  }

  function facts(pairs) {
    const dl = el('dl', { class: 'facts' });
    for (const [k, v] of pairs) {
      if (v === undefined || v === null || v === '') continue;
      dl.append(el('dt', { text: k }), el('dd', {}, v));
    }
    return dl;
  }

  function prettyPayload(record) {
    if (record.payload_encoding === 'json') {
      try { return JSON.stringify(JSON.parse(record.payload), null, 2); } catch (e) { return record.payload; }
    }
    try {
      const text = atob(record.payload || '');
      // Printable text is shown as text; other bytes as base64.
      return /^[\x09\x0a\x0d\x20-\x7e]*$/.test(text) ? text : '(binary, base64) ' + record.payload;
    } catch (e) {
      return record.payload || '';
    }
  }

  async function loadDetail(id) {
    show('detail');
    document.title = id + ' - countersign';
    state.detailId = id;
    state.detailShown = null;
    state.listeners.clear();
    const body = $('detail-body');
    body.replaceChildren(el('p', { class: 'muted', text: 'Loading ' + id + ' ...' }));
    let record;
    let evidence;
    try {
      const path = '/api/v1/approvals/' + encodeURIComponent(id);
      const [got, why] = await Promise.all([api(path), api(path + '/evidence')]);
      if (got.status !== 200) {
        body.replaceChildren(el('p', { class: 'error', text: describeFailure(got) }));
        return;
      }
      record = got.body.record;
      evidence = why.status === 200 ? why.body : { unavailable: describeFailure(why) };
      if (got.body.payload_redacted) record.payload_redacted = true;
    } catch (e) {
      if (!(e instanceof Refused)) body.replaceChildren(el('p', { class: 'error', text: 'Could not load: ' + e.message }));
      return;
    }
    if (state.detailId !== id) return;
    renderDetail(record, evidence);
  }

  function renderDetail(record, evidence) {
    const body = $('detail-body');
    state.detailShown = { id: record.id, job_hash: record.job_hash, policy_snapshot: record.policy_snapshot };
    const left = timeLeft(record.expires_at);
    const votes = Array.isArray(record.votes) && record.votes.length ? record.votes : (record.approvals || []);
    const voters = new Set(votes.map((v) => v.approver));
    // Who may decide: the rule's approvers (names, group:<g>), plus escalation steps that apply.
    const now = Date.now();
    let approvers = Array.isArray(record.approvers) && record.approvers.length ? [...record.approvers] : null;
    const later = [];
    for (const step of record.escalations || []) {
      if (Date.parse(step.at) <= now) { if (approvers) approvers.push(...step.approvers); } else later.push(step);
    }
    // Who may still decide: the allowed approvers who have not voted (recomputed after a vote).
    const mayDecide = () => {
      let text = approvers ? approvers.filter((a) => !voters.has(a)).join(', ') || 'nobody' : 'any approver';
      if (record.separation_of_duties && record.requester) text += ' (not ' + record.requester + ', who requested it)';
      for (const step of later) text += '; from ' + step.at + ' also ' + step.approvers.join(', ');
      return text;
    };
    state.onVote = (who, count, quorum) => {
      voters.add(who);
      const votesAt = $('votes-count');
      const mayAt = $('may-decide');
      if (votesAt) votesAt.textContent = votesText({ votes: count, quorum: record.quorum === undefined ? quorum : record.quorum });
      if (mayAt) mayAt.textContent = mayDecide();
      return mayDecide();
    };
    const current = evidence.policy_snapshot_current;

    const notice = el('div', { class: 'notice', id: 'changed', role: 'status', hidden: true });

    const head = el('div', { class: 'head' },
      el('h1', { id: 'approval-id', text: record.id }),
      el('span', { class: 'state ' + record.state, id: 'approval-state', text: record.state.replace('_', ' ') }));

    const summary = section('Job',
      facts([
        ['Topic', el('span', { class: 'mono', text: record.topic })],
        ['Subject', el('span', { class: 'mono', text: record.subject })],
        ['Target', el('span', { class: 'mono', text: record.target })],
        ['Requester', record.requester || '-'],
        ['Held', record.created_at + ' (' + age(record.created_at) + ' ago)'],
        ['Time left', record.state === 'pending' ? left.text + (record.expires_at ? ' (until ' + record.expires_at + ', then ' + (record.on_timeout || 'reject') + ')' : '') : '-'],
        ['Job hash', el('code', { id: 'job-hash', text: record.job_hash })],
        ['Job id', record.job_id],
      ]));

    const snapshotLine = el('span', {},
      el('code', { id: 'snapshot', text: record.policy_snapshot }), ' ',
      current === undefined ? '' : current === record.policy_snapshot
        ? el('span', { class: 'badge ok', text: 'in force' })
        : el('span', { class: 'badge bad', text: 'not in force: the policy changed' }));

    // Why it was held: under the snapshot it was held under. When the policy changed since, say
    // so, and show what the policy in force now would decide for the same job.
    const why = evidence.explain || {};
    const conditionList = (explain, id) => el('ul', { class: 'conds', id },
      ...(explain.conditions || []).map((c) => el('li', {},
        el('span', { class: 'mark ' + (c.holds ? 'yes' : 'no'), text: c.holds ? '✓' : '✗' }),
        el('code', { text: c.key }), ' saw ', el('code', { text: c.seen }), ' (needs ', el('code', { text: c.test }), ')')));
    const traceList = (explain) => (explain.trace || []).length
      ? el('details', {}, el('summary', { text: 'Rules tried in order' }),
        el('ul', { class: 'conds muted' }, ...explain.trace.map((line) => el('li', { class: 'mono', text: line }))))
      : null;
    const changed = evidence.snapshot_current === false;
    const nowExplain = evidence.explain_current || {};
    const nowText = nowExplain.decision
      ? (nowExplain.decision === 'require_human' ? 'hold it for approval' : nowExplain.decision) + ' by rule ' + nowExplain.rule
      : '';
    const rule = section('Why it was held',
      changed ? el('p', { class: 'notice', id: 'policy-changed', role: 'note',
        text: 'The policy changed since this job was held. Below: why the policy it was held under held it' +
          (nowText ? ', then what the policy in force now would do: ' + nowText + '.' : '.') }) : null,
      facts([
        ['Rule', el('strong', { id: 'rule', text: record.rule })],
        ['Policy', snapshotLine],
        evidence.unavailable ? ['Explanation', evidence.unavailable]
          : evidence.explain_unavailable ? ['Explanation', el('span', { id: 'explain-unavailable', text: evidence.explain_unavailable })]
            : [changed ? 'Decision then' : 'Decision', why.decision ? why.decision + (why.rule && why.rule !== record.rule ? ' by rule ' + why.rule : '') : ''],
      ]),
      (why.conditions || []).length ? conditionList(why, 'conditions') : null,
      traceList(why),
      changed ? el('div', { id: 'explain-current' },
        el('h3', { text: 'What the policy in force now would do' }),
        facts([
          ['Policy now', el('code', { text: evidence.policy_snapshot_current || '' })],
          ['Decision now', nowText || '-'],
        ]),
        (nowExplain.conditions || []).length ? conditionList(nowExplain, 'conditions-current') : null,
        traceList(nowExplain)) : null);

    const payload = section('Payload' + (record.payload_redacted ? ' (redacted)' : ''),
      el('pre', { class: 'payload', id: 'payload', tabindex: '0' }, prettyPayload(record)));

    const headerRows = [];
    for (const [name, values] of Object.entries(record.headers || {})) {
      for (const value of values) headerRows.push(el('tr', {}, el('td', { text: name }), el('td', { class: 'mono', text: value })));
    }
    const headers = section('Headers', headerRows.length
      ? el('table', { class: 'kv', id: 'headers' }, el('tbody', {}, ...headerRows))
      : el('p', { class: 'muted', text: 'No headers.' }));

    const people = section('Votes',
      facts([
        ['Votes', el('span', { id: 'votes-count', text: votesText(record) })],
        ['Voted', votes.length ? votes.map((v) => v.approver + (v.via ? ' via ' + v.via : '') + ' at ' + v.at + (v.reason ? ': ' + v.reason : '')).join('; ') : 'nobody yet'],
        ['May still decide', el('span', { id: 'may-decide', text: record.state === 'pending' ? mayDecide() : '-' })],
        ['Decided by', record.decided_by ? record.decided_by + ' at ' + record.decided_at + (record.reason ? ': ' + record.reason : '') : ''],
      ]));

    // countersign checked each event's signature when it read it back (signature_check): only a
    // verified one was made by countersign; anyone allowed to publish events can add the others.
    const signatureText = {
      verified: 'verified',
      unsigned: 'NOT VERIFIED: unsigned',
      unknown_key: 'NOT VERIFIED: signed by an unknown key',
      bad_signature: 'NOT VERIFIED: bad signature',
      not_checked: 'NOT VERIFIED: not checked',
    };
    const timeline = section('Timeline', (evidence.timeline || []).length
      ? el('ol', { class: 'timeline', id: 'timeline' }, ...evidence.timeline.map((e) => {
        const verified = e.signature_check === 'verified';
        return el('li', { class: verified ? 'verified' : 'unverified', 'data-signature': e.signature_check || 'missing' },
          el('span', { class: 'badge ' + (verified ? 'ok' : 'bad'), text: signatureText[e.signature_check] || 'NOT VERIFIED' }),
          ' ', el('strong', { text: e.event }), ' ', el('span', { class: 'muted', text: e.at || '' }),
          e.actor ? ' by ' + e.actor : '', e.reason ? ' (' + e.reason + ')' : '',
          verified ? '' : el('div', { class: 'muted', text: 'Not made by countersign as shown: forged, altered, or written before events were signed.' }));
      }))
      : el('p', { class: 'muted', text: evidence.unavailable ? 'The audit trail is not available.' : 'No events recorded yet.' }));

    const decide = decidePanel(record);
    body.replaceChildren(head, notice,
      el('div', { class: 'grid' },
        el('div', {}, payload, headers, rule),
        el('div', {}, decide, summary, people, timeline)));

    // A change to this approval while it is open: say so; the buttons keep sending what is shown.
    state.listeners.add((event) => {
      if (event.approval_id !== record.id) return;
      notice.replaceChildren('This approval changed since it was shown (' + event.event +
        (event.actor ? ' by ' + event.actor : '') + (event.reason ? ': ' + event.reason : '') + '). ',
      el('button', { type: 'button', onclick: () => loadDetail(record.id), text: 'Reload' }));
      notice.hidden = false;
    });
  }

  function decidePanel(record) {
    if (state.scope !== 'approve') {
      return section('Decision', el('p', { class: 'muted', id: 'read-only', text: 'Your token can read but not decide.' }));
    }
    if (record.state !== 'pending') {
      return section('Decision', el('p', { class: 'muted', text: 'Decided: ' + record.state.replace('_', ' ') + '.' }));
    }
    const reason = el('textarea', { id: 'reason', maxlength: '1000', placeholder: 'Reason (optional)', 'aria-label': 'Reason (optional)' });
    const outcome = el('div', { id: 'outcome', role: 'status', 'aria-live': 'polite', hidden: true });
    const approve = el('button', { type: 'button', class: 'approve', id: 'approve', text: 'Approve' });
    const reject = el('button', { type: 'button', class: 'reject', id: 'reject', text: 'Reject' });
    const act = async (action) => {
      approve.disabled = reject.disabled = true;
      const shown = state.detailShown;
      const request = { job_hash: shown.job_hash, policy_snapshot: shown.policy_snapshot };
      if (reason.value.trim()) request.reason = reason.value.trim();
      let answer;
      try {
        answer = await api('/api/v1/approvals/' + encodeURIComponent(shown.id) + '/' + action, { method: 'POST', body: request });
      } catch (e) {
        if (e instanceof Refused) return;
        answer = { status: 0, body: { reason: e.message } };
      }
      const [kind, text, next] = describeDecision(action, answer);
      outcome.className = 'outcome ' + kind;
      outcome.replaceChildren(text, next ? ' ' : '', next || '');
      outcome.hidden = false;
      const retry = answer.status === 409 && answer.body.reason === 'lock_busy';
      approve.disabled = reject.disabled = !(retry || answer.status === 0 || answer.status >= 500);
    };
    approve.addEventListener('click', () => act('approve'));
    reject.addEventListener('click', () => act('reject'));
    return section('Decision',
      el('div', { class: 'decide' }, reason, el('div', { class: 'buttons' }, approve, reject), outcome,
        el('p', { class: 'muted', text: 'Your decision is bound to job hash ' + record.job_hash.slice(0, 19) + '... and the policy shown.' })));
  }

  function reloadButton(label) {
    return el('button', { type: 'button', onclick: () => loadDetail(state.detailId), text: label || 'Reload it' });
  }

  // [kind, words, next step] for an answer to approve/reject.
  function describeDecision(action, answer) {
    const b = answer.body || {};
    switch (answer.status) {
      case 200:
        if (b.status === 'approved') return ['good', 'Approved. The job was released' + (b.target ? ' to ' + b.target : '') + '.'];
        if (b.status === 'rejected') return ['good', 'Rejected. The job will not run.'];
        if (b.status === 'already_approved') return ['info', 'Already approved by ' + (b.decided_by || 'someone') + ' at ' + (b.decided_at || '?') + '.'];
        if (b.status === 'already_rejected') return ['info', 'Already rejected by ' + (b.decided_by || 'someone') + ' at ' + (b.decided_at || '?') + '.'];
        if (b.status === 'already_voted') return ['info', 'Your vote was already recorded; it counts once.'];
        return ['good', 'Done (' + b.status + ').'];
      case 202:
        if (b.status === 'vote_recorded') {
          const still = state.onVote ? state.onVote(state.approver, b.votes, b.quorum) : '';
          return ['good', 'Your vote is recorded: vote ' + b.votes + ' of ' + b.quorum + '.' +
            (still ? ' Still to decide: ' + still + '.' : '') + ' The job runs when the quorum is reached.'];
        }
        return ['info', 'Approved. The release is not confirmed yet; countersign finishes it by itself.'];
      case 409:
        switch (b.reason) {
          case 'snapshot_changed':
            return ['bad', b.rejected
              ? 'The policy changed since this job was held, and the new policy rejects it. Nothing was released.'
              : 'The policy changed since this job was shown. Nothing was released: the job is now under the new policy. Review it again before deciding.', reloadButton('Review it again')];
          case 'job_changed':
            return ['bad', 'The job no longer matches what this page shows (its hash differs). Nothing was released. Do not approve it; tell whoever runs countersign.'];
          case 'already_approved':
            return ['info', 'It was approved already; a reject cannot undo that.', reloadButton('See who decided')];
          case 'already_rejected':
            return ['info', 'It was rejected already; it cannot be approved.', reloadButton('See who decided')];
          case 'lock_busy':
            return ['bad', 'countersign could not confirm the decision just now. Nothing is known to have changed: try again.'];
          default:
            return ['bad', 'Conflict (' + (b.reason || 'unknown') + '). Nothing was released.', reloadButton()];
        }
      case 403:
        if (b.reason === 'self_approval') return ['bad', 'You requested this job, so someone else must decide it.'];
        if (b.reason === 'not_an_approver') return ['bad', 'You are not one of the approvers of this rule (yet: an escalation may add you later).'];
        return ['bad', 'Your token may read but not ' + action + '. Ask for an approve token.'];
      case 404:
        return ['bad', 'There is no such approval (it may have aged out).'];
      case 410:
        return ['bad', 'Too late: this approval expired' + (b.expires_at ? ' at ' + b.expires_at : '') + '. The job will not run; ask the requester to send it again if it is still needed.'];
      case 400:
        return ['bad', 'countersign refused the request (' + (b.field || '') + ': ' + (b.reason || 'bad request') + ').'];
      case 0:
        return ['bad', 'countersign could not be reached (' + (b.reason || 'network error') + '). Try again.'];
      default:
        return ['bad', 'countersign is not able to answer now (' + answer.status + '). Try again in a moment.'];
    }
  }

  function describeFailure(answer) {
    const b = answer.body || {};
    if (answer.status === 404) return 'There is no such approval.';
    if (answer.status === 403) return 'This token may not do that.';
    if (answer.status === 503) return 'countersign is not able to answer now; try again in a moment.';
    return 'countersign answered ' + answer.status + (b.reason ? ' (' + b.reason + ')' : '') + '.';
  }

  // ---- navigation ---------------------------------------------------------------------------

  function navigate(href) {
    history.pushState(null, '', href);
    route();
  }

  function route() {
    if (!state.token) return signOut('');
    const path = location.pathname;
    if (path.startsWith('/ui/approvals/')) {
      let id = path.slice('/ui/approvals/'.length);
      try { id = decodeURIComponent(id); } catch (e) { /* shown as typed */ }
      return loadDetail(id);
    }
    state.detailId = '';
    state.listeners.clear();
    return showList();
  }

  function reloadCurrent() {
    if (!$('detail').hidden && state.detailId) {
      const notice = $('changed');
      if (notice) {
        notice.replaceChildren('Some live updates were missed. ', reloadButton('Reload'));
        notice.hidden = false;
      }
    } else if (!$('list').hidden) {
      loadList();
    }
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('signin-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const token = $('token').value.trim();
      if (token) signIn(token);
    });
    $('signout').addEventListener('click', () => signOut(''));
    $('state').addEventListener('change', () => { state.page = 0; loadList(); });
    $('topic').addEventListener('input', () => { state.page = 0; renderList(); });
    $('prev').addEventListener('click', () => { state.page--; renderList(); });
    $('next').addEventListener('click', () => { state.page++; renderList(); });
    for (const id of ['home', 'back']) {
      $(id).addEventListener('click', (e) => {
        if (e.ctrlKey || e.metaKey || e.shiftKey) return;
        e.preventDefault();
        navigate('/ui/');
      });
    }
    document.addEventListener('click', (e) => {
      const link = e.target.closest('td.id a');
      if (!link || e.ctrlKey || e.metaKey || e.shiftKey) return;
      e.preventDefault();
      navigate(link.getAttribute('href'));
    });
    window.addEventListener('popstate', () => { if (state.token) route(); });
    // Ages and time left move on.
    setInterval(() => { if (!$('list').hidden) queueRender(); }, 5000);
    if (state.token) signIn(state.token); else signOut('');
  });
})();
