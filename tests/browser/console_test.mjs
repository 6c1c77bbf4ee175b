// The reviewer console in a real browser: Debian's chromium (headless) driven by playwright-core,
// against the real countersign binary and a real nats-server, with a worker subscription from
// the official NATS client counting deliveries.
//
//   node tests/browser/console_test.mjs COUNTERSIGN_BIN NATS_SERVER_BIN [--screenshots DIR]
//
// Exits 0 when every check passed; prints each check and fails on the first that does not hold.
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { ALICE, BOB, CAROL, RITA, chromium, nats, policy, sleep, startStack } from './harness.mjs';

const { connect, headers: natsHeaders, StringCodec } = nats;
const [countersignBin, natsServerBin] = process.argv.slice(2).map((p) => (p ? resolve(p) : p));
const shotsAt = process.argv.indexOf('--screenshots');
const screenshots = shotsAt > 0 ? resolve(process.argv[shotsAt + 1]) : '';
if (!countersignBin || !natsServerBin) {
  console.error('usage: console_test.mjs COUNTERSIGN_BIN NATS_SERVER_BIN [--screenshots DIR]');
  process.exit(2);
}

const XSS = '<img src=x onerror="window.__xss=1">';
const sc = StringCodec();
let stack = null;
let failures = 0;

function check(ok, what) {
  console.log((ok ? 'ok   ' : 'FAIL ') + what);
  if (!ok) {
    failures++;
    throw new Error('check failed: ' + what);
  }
}

async function main() {
  stack = await startStack(countersignBin, natsServerBin);
  const { dir, natsUrl, origin, gateway } = stack;

  // The worker: counts what each approval delivered.
  const nc = await connect({ servers: natsUrl });
  const delivered = new Map();
  const sub = nc.subscribe('jobs.>');
  (async () => {
    for await (const m of sub) {
      const id = m.headers ? m.headers.get('Countersign-Approval-Id') : '';
      delivered.set(id, (delivered.get(id) || 0) + 1);
    }
  })();
  await nc.flush();

  const hold = async (jobId, body, extraHeaders = {}, subject = 'agents.jobs.finance.payment.execute') => {
    const h = natsHeaders();
    h.set('Nats-Msg-Id', jobId);
    for (const [k, v] of Object.entries(extraHeaders)) h.set(k, v);
    const reply = await nc.request(subject, sc.encode(JSON.stringify(body)), { headers: h, timeout: 5000 });
    const answer = JSON.parse(sc.decode(reply.data));
    if (answer.code !== 202) throw new Error('not held: ' + JSON.stringify(answer));
    return answer;
  };
  const rest = async (path, token, init = {}) => {
    const response = await fetch(origin + path, { ...init, headers: { Authorization: 'Bearer ' + token, ...(init.headers || {}) } });
    return { status: response.status, body: await response.json().catch(() => ({})), headers: response.headers };
  };

  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'], headless: true });
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  const consoleErrors = [];
  const foreign = [];
  const dialogs = [];
  page.on('console', (msg) => { if (msg.type() === 'error') consoleErrors.push(msg.text()); });
  page.on('pageerror', (error) => consoleErrors.push('page error: ' + error.message));
  page.on('request', (request) => { if (new URL(request.url()).origin !== origin) foreign.push(request.url()); });
  page.on('dialog', (dialog) => { dialogs.push(dialog.message()); dialog.dismiss(); });

  // The page's headers.
  const ui = await fetch(origin + '/ui/');
  check(ui.status === 200 && ui.headers.get('content-security-policy').startsWith("default-src 'self'"),
    "/ui/ is served with Content-Security-Policy: default-src 'self'");
  check(ui.headers.get('x-content-type-options') === 'nosniff', '/ui/ is served with X-Content-Type-Options: nosniff');
  const html = await ui.text();
  check(!/<script(?![^>]*\bsrc=)[^>]*>/i.test(html) && !/\son\w+=/i.test(html), 'the page has no inline script or handler');

  // Sign in: a wrong token shows "token refused" and no data.
  await page.goto(origin + '/ui/');
  await page.fill('#token', 'not-a-token');
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector('#signin-error:not([hidden])');
  check((await page.textContent('#signin-error')) === 'token refused', 'a refused token shows "token refused"');
  check(await page.isHidden('#list') && (await page.$$('#rows tr')).length === 0, 'a refused token shows no data');
  check(await page.evaluate(() => sessionStorage.length === 0), 'a refused token is not kept');
  const refusedErrors = consoleErrors.splice(0).filter((e) => !/status of 401/.test(e));
  check(refusedErrors.length === 0, 'only the expected 401 was logged while refused: ' + refusedErrors.join(' | '));

  await page.fill('#token', ALICE);
  await page.keyboard.press('Enter');  // keyboard: the form submits with Enter
  await page.waitForSelector('body[data-live="1"]');
  check(await page.isVisible('#list'), 'signed in with an approve token: the list shows');
  check(await page.evaluate((t) => sessionStorage.getItem('countersign.token') === t && !location.href.includes(t), ALICE),
    'the token is in sessionStorage and not in the URL');

  // A job held now appears without reload within 2 s.
  const jobA = await hold('pay-' + Date.now(), { env: 'production', amount: 250, to: XSS, card: { number: '4111111111111111' }, memo: XSS },
    { 'X-Note': XSS });
  const heldAt = Date.now();
  await page.waitForSelector(`#rows tr[data-id="${jobA.approval_id}"]`, { timeout: 2000 });
  check(Date.now() - heldAt <= 2000, `a held job appears in the list without reload within 2 s (${Date.now() - heldAt} ms)`);

  // The evidence pack is the record's.
  const record = (await rest('/api/v1/approvals/' + jobA.approval_id, ALICE)).body.record;
  await page.click(`#rows tr[data-id="${jobA.approval_id}"] td.id a`);
  await page.waitForSelector('#payload');
  check(page.url() === origin + '/ui/approvals/' + jobA.approval_id, 'the evidence pack is at /ui/approvals/<id>');
  check((await page.textContent('#job-hash')) === record.job_hash && record.job_hash === jobA.job_hash, 'the page shows the record\'s job hash');
  check((await page.textContent('#rule')) === record.rule, 'the page shows the record\'s rule');
  check((await page.textContent('#snapshot')) === record.policy_snapshot, 'the page shows the record\'s policy snapshot');
  const payloadText = await page.textContent('#payload');
  check(payloadText === JSON.stringify(JSON.parse(record.payload), null, 2), 'the payload is the record\'s, pretty-printed');
  check(payloadText.includes('[REDACTED]') && !payloadText.includes('4111111111111111'), 'redacted payload fields stay redacted');
  const conditions = await page.textContent('#conditions');
  check(conditions.includes('payload.amount') && conditions.includes('250') && conditions.includes('gt 100') &&
    conditions.includes('"production"'), 'why it matched: each condition with the value it saw');
  check((await page.textContent('#headers')).includes(XSS), 'headers are shown as text');
  check((await page.$$('#payload img, #headers img, #detail-body img')).length === 0, 'HTML in payload and headers is not rendered');
  await page.waitForSelector('#timeline');
  check((await page.textContent('#timeline')).includes('held'), 'the timeline shows the held event');

  // A `held` event forged by anyone who may publish on the events subjects (unsigned, claiming to
  // be verified) is marked in the timeline, never shown as genuine.
  const forged = { event: 'held', approval_id: jobA.approval_id, topic: 'finance.payment.execute', actor: 'mallory',
    reason: 'forged', at: new Date().toISOString(), signature_check: 'verified' };
  nc.publish('countersign.events.held.finance.payment.execute', sc.encode(JSON.stringify(forged)));
  await nc.flush();
  for (let i = 0; i < 50 && (await rest('/api/v1/approvals/' + jobA.approval_id + '/evidence', ALICE)).body.timeline.length < 2; i++) await sleep(100);
  await page.click('#back');
  // Nor does a forged `held` reach the live list: a genuine job held after it appears, it does not.
  nc.publish('countersign.events.held.finance.payment.execute',
    sc.encode(JSON.stringify({ ...forged, approval_id: 'forged-row-1' })));
  const sentinel = await hold('pay-sentinel-' + Date.now(), { env: 'production', amount: 150 });
  await page.waitForSelector(`#rows tr[data-id="${sentinel.approval_id}"]`, { timeout: 2000 });
  check((await page.$$('#rows tr[data-id="forged-row-1"]')).length === 0, 'a forged held event adds no row to the list');
  await page.click(`#rows tr[data-id="${jobA.approval_id}"] td.id a`);
  await page.waitForSelector('#timeline li[data-signature="unsigned"]', { timeout: 5000 });
  const forgedRow = await page.textContent('#timeline li[data-signature="unsigned"]');
  check(forgedRow.includes('NOT VERIFIED') && forgedRow.includes('mallory'), 'a forged event is shown as NOT VERIFIED');
  const genuineRows = await page.$$eval('#timeline li[data-signature="verified"]', (rows) => rows.map((r) => r.textContent));
  check(genuineRows.length === 1 && genuineRows[0].includes('held') && !genuineRows[0].includes('mallory'),
    'the genuine held event is the one marked verified');

  // Approve (keyboard: focus the button, press Enter) with a hostile reason.
  await page.fill('#reason', XSS);
  await page.focus('#approve');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#outcome:not([hidden])');
  check((await page.textContent('#outcome')).startsWith('Approved. The job was released'), 'approve: the page says it was released');
  await sleep(500);
  check(delivered.get(jobA.approval_id) === 1, 'the worker got the approved job exactly once');
  await page.click('#back');
  await page.waitForSelector(`#rows tr[data-id="${jobA.approval_id}"] .state.released`, { timeout: 3000 });
  check(true, 'the list shows it released');

  // HTML in a job id (the producer's Nats-Msg-Id): listed and shown as text, never run.
  const xssJob = await hold(XSS, { env: 'production', amount: 333 });
  await page.waitForSelector(`#rows tr[data-id="${xssJob.approval_id}"]`, { timeout: 2000 });
  await page.click(`#rows tr[data-id="${xssJob.approval_id}"] td.id a`);
  await page.waitForSelector('#payload');
  check((await page.textContent('#detail-body')).includes(XSS) && (await page.$$('#detail-body img, #rows img')).length === 0,
    'an HTML job id is shown as text, not rendered');
  await page.click('#back');

  // Paging, and the filters: 55 more jobs make a second page of 50; rejected, they leave the
  // pending list and show under the state filter `rejected`; the topic filter takes wildcards.
  const bulk = [];
  for (let i = 0; i < 55; i++) bulk.push(hold('bulk-' + i + '-' + Date.now(), { env: 'production', amount: 200 + i }, {}, 'agents.jobs.finance.bulk.pay'));
  const bulkIds = (await Promise.all(bulk)).map((answer) => answer.approval_id);
  await page.fill('#topic', 'finance.bulk.>');
  await page.waitForFunction(() => document.getElementById('count').textContent.startsWith('55 '), null, { timeout: 5000 });
  const bulkShown = await page.$$eval('#rows tr', (rows) => rows.map((r) => r.querySelector('td.mono').textContent));
  check(bulkShown.length === 50 && bulkShown.every((t) => t === 'finance.bulk.pay'),
    'the 55 held jobs arrive live, and the topic filter finance.bulk.> shows only them: ' + await page.textContent('#count'));
  await page.fill('#topic', '');
  const pages = await page.textContent('#page');
  check(/^page 1 of [2-9]$/.test(pages) && (await page.$$('#rows tr')).length === 50 && !(await page.isDisabled('#next')),
    'more than 50 approvals are paged, 50 to a page: ' + pages);
  const firstPage = await page.$$eval('#rows tr', (rows) => rows.map((r) => r.dataset.id));
  await page.click('#next');
  const secondPage = await page.$$eval('#rows tr', (rows) => rows.map((r) => r.dataset.id));
  check((await page.textContent('#page')).startsWith('page 2 of') && secondPage.length > 0 && !secondPage.some((id) => firstPage.includes(id)),
    'Older shows the next page, none of the first page\'s rows');
  await page.click('#prev');
  check((await page.textContent('#page')).startsWith('page 1 of'), 'Newer goes back to the first page');
  await page.fill('#topic', 'payment');
  const partShown = await page.$$eval('#rows tr', (rows) => rows.map((r) => r.querySelector('td.mono').textContent));
  check(partShown.length >= 2 && partShown.every((t) => t === 'finance.payment.execute'),
    'a topic filter without wildcards matches part of the topic: ' + partShown.length + ' rows');
  await page.fill('#topic', '');
  for (const id of bulkIds) {
    const rejected = await rest('/api/v1/approvals/' + encodeURIComponent(id) + '/reject', ALICE, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ reason: 'bulk test' }),
    });
    if (rejected.status !== 200) throw new Error('reject ' + id + ': ' + rejected.status + ' ' + JSON.stringify(rejected.body));
  }
  await page.selectOption('#state', 'rejected');
  await page.waitForFunction(() => document.getElementById('count').textContent.startsWith('55 '), null, { timeout: 5000 });
  check((await page.$$eval('#rows .state', (cells) => cells.every((c) => c.textContent === 'rejected'))),
    'the state filter rejected lists the 55 rejected approvals, from the server');
  await page.selectOption('#state', 'pending');
  await page.waitForSelector(`#rows tr[data-id="${xssJob.approval_id}"]`, { timeout: 5000 });  // pending: not under rejected
  check(!(await page.$$eval('#rows tr', (rows) => rows.some((r) => r.dataset.id.startsWith('bulk-') || r.querySelector('.state.released')))),
    'back on pending: the rejected and released approvals are gone');


  // A 2-of-2 rule: the first vote shows "vote 1 of 2" and who may still decide; nothing runs
  // until the second approver (bob, signed in on another page) approves; then it runs once.
  const wire = await hold('wire-' + Date.now(), { env: 'production', amount: 70000, to: 'Initech' }, {},
    'agents.jobs.finance.wire.send');
  await page.waitForSelector(`#rows tr[data-id="${wire.approval_id}"]`, { timeout: 2000 });
  // The row comes from the held event; its votes column fills in once the record is read.
  const votesCell = `#rows tr[data-id="${wire.approval_id}"] td[data-label="Votes"]`;
  check(['…', '0 of 2'].includes(await page.textContent(votesCell)), 'a fresh 2-of-2 row never claims a quorum of 1');
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent === '0 of 2', votesCell, { timeout: 2000 })
    .catch(() => {});
  check((await page.textContent(votesCell)) === '0 of 2', 'the list shows a 2-of-2 job with votes 0 of 2');
  await page.click(`#rows tr[data-id="${wire.approval_id}"] td.id a`);
  await page.waitForSelector('#approve');
  check((await page.textContent('#votes-count')) === '0 of 2' && (await page.textContent('#may-decide')) === 'alice, bob',
    'before any vote: 0 of 2, alice and bob may decide');
  await page.click('#approve');
  await page.waitForSelector('#outcome:not([hidden])');
  const firstVote = await page.textContent('#outcome');
  check(firstVote.includes('vote 1 of 2') && firstVote.includes('Still to decide: bob'), 'the first vote shows "vote 1 of 2" and who may still decide: ' + firstVote);
  check((await page.textContent('#votes-count')) === '1 of 2' && (await page.textContent('#may-decide')) === 'bob',
    'the evidence pack now says 1 of 2, bob may still decide');
  await sleep(500);
  check(!delivered.has(wire.approval_id), 'one vote of two released nothing');
  const bobContext = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const bobPage = await bobContext.newPage();
  bobPage.on('console', (msg) => { if (msg.type() === 'error') consoleErrors.push('bob: ' + msg.text()); });
  bobPage.on('request', (request) => { if (new URL(request.url()).origin !== origin) foreign.push(request.url()); });
  await bobPage.goto(origin + '/ui/approvals/' + wire.approval_id);
  await bobPage.fill('#token', BOB);
  await bobPage.click('#signin-form button[type=submit]');
  await bobPage.waitForSelector('#approve');
  check((await bobPage.textContent('#votes-count')) === '1 of 2' && (await bobPage.textContent('#may-decide')) === 'bob' &&
    (await bobPage.textContent('#detail-body')).includes('alice at'), 'bob\'s page shows alice\'s vote and bob as the one left');
  await bobPage.click('#approve');
  await bobPage.waitForSelector('#outcome:not([hidden])');
  check((await bobPage.textContent('#outcome')).startsWith('Approved. The job was released'), 'the second vote releases it: ' + await bobPage.textContent('#outcome'));
  await sleep(500);
  check(delivered.get(wire.approval_id) === 1, 'the worker got the 2-of-2 job exactly once');
  const wireRecord = (await rest('/api/v1/approvals/' + wire.approval_id, ALICE)).body.record;
  check(wireRecord.state === 'released' && wireRecord.decided_by === 'alice,bob', 'the record says released, decided by alice,bob: ' + wireRecord.decided_by);
  await bobContext.close();
  await page.click('#back');
  await page.waitForSelector(`#rows tr[data-id="${wire.approval_id}"] .state.released`, { timeout: 3000 });
  check(true, 'alice\'s list shows the 2-of-2 job released without reload');

  // The policy changes under a page that shows a job: approve answers 409 in words, nothing runs.
  const jobB = await hold('pay-b-' + Date.now(), { env: 'production', amount: 900 });
  const jobC = await hold('pay-c-' + Date.now(), { env: 'production', amount: 700 });  // explained after the change
  await page.waitForSelector(`#rows tr[data-id="${jobB.approval_id}"]`, { timeout: 2000 });
  await page.click(`#rows tr[data-id="${jobB.approval_id}"] td.id a`);
  await page.waitForSelector('#approve');
  writeFileSync(join(dir, 'policy.yaml'), policy(500));
  gateway.kill('SIGHUP');
  for (let i = 0; i < 50; i++) {
    const ev = await rest('/api/v1/approvals/' + jobB.approval_id + '/evidence', ALICE);
    if (ev.body.policy_snapshot_current !== jobB.policy_snapshot) break;
    await sleep(100);
  }
  await page.click('#approve');
  await page.waitForSelector('#outcome:not([hidden])');
  const conflict = await page.textContent('#outcome');
  check(conflict.includes('The policy changed') && conflict.includes('Nothing was released'), 'a stale page gets the 409 in words: ' + conflict);
  await sleep(500);
  check(!delivered.has(jobB.approval_id), 'nothing was released after the policy changed');
  const conflictErrors = consoleErrors.splice(0).filter((e) => !/status of 409/.test(e));
  check(conflictErrors.length === 0, 'no console errors beyond the expected 409: ' + conflictErrors.join(' | '));

  // The other refusals, each in words with what to do next, and nothing released.
  // A page whose job is not the record's (its approve carries another job hash): 409 job_changed.
  const decideOn = async (onPage, approvalId) => {
    await onPage.goto(origin + '/ui/approvals/' + encodeURIComponent(approvalId));
    await onPage.waitForSelector('#approve');
  };
  const outcomeAfterApprove = async (onPage) => {
    await onPage.click('#approve');
    await onPage.waitForSelector('#outcome:not([hidden])');
    return onPage.textContent('#outcome');
  };
  const jobD = await hold('pay-d-' + Date.now(), { env: 'production', amount: 950 });
  await decideOn(page, jobD.approval_id);
  const otherHash = 'sha256:' + '0'.repeat(64);
  await page.route('**/approve', (route) => {
    const sent = JSON.parse(route.request().postData());
    route.continue({ postData: JSON.stringify({ ...sent, job_hash: otherHash }) });
  });
  const changedJob = await outcomeAfterApprove(page);
  await page.unroute('**/approve');
  check(changedJob.includes('no longer matches what this page shows') && changedJob.includes('Nothing was released'),
    'a page showing another job than the record gets 409 job_changed in words: ' + changedJob);
  check(await page.isDisabled('#approve'), 'after job_changed the buttons stay disabled');

  // An approve token of someone who is not an approver of the rule: 403 in words.
  const carol = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const carolPage = await carol.newPage();
  carolPage.on('console', (msg) => { if (msg.type() === 'error') consoleErrors.push('carol: ' + msg.text()); });
  carolPage.on('request', (request) => { if (new URL(request.url()).origin !== origin) foreign.push(request.url()); });
  const wire2 = await hold('wire2-' + Date.now(), { env: 'production', amount: 5000 }, {}, 'agents.jobs.finance.wire.send');
  await carolPage.goto(origin + '/ui/');
  await carolPage.fill('#token', CAROL);
  await carolPage.click('#signin-form button[type=submit]');
  await carolPage.waitForSelector('#list:not([hidden])');
  await decideOn(carolPage, wire2.approval_id);
  const notApprover = await outcomeAfterApprove(carolPage);
  check(notApprover.includes('You are not one of the approvers of this rule'), 'an approve token of a non-approver gets the 403 in words: ' + notApprover);

  // Past its deadline (a rule with a 5 s timeout), on a page opened before it: 410 in words.
  const petty = await hold('petty-' + Date.now(), { env: 'production', amount: 20 }, {}, 'agents.jobs.finance.petty.cash');
  await decideOn(carolPage, petty.approval_id);
  const pettyRecord = (await rest('/api/v1/approvals/' + petty.approval_id, RITA)).body.record;
  await sleep(Math.max(0, Date.parse(pettyRecord.expires_at) + 300 - Date.now()));
  const tooLate = await outcomeAfterApprove(carolPage);
  check(tooLate.startsWith('Too late: this approval expired') && tooLate.includes('send it again'),
    'approving after the deadline gets the 410 in words: ' + tooLate);
  await sleep(300);
  check(!delivered.has(jobD.approval_id) && !delivered.has(wire2.approval_id) && !delivered.has(petty.approval_id),
    'nothing was released by a refused decision');
  const refusalErrors = consoleErrors.splice(0).filter((e) => !/status of (403|409|410)/.test(e));
  check(refusalErrors.length === 0, 'no console errors beyond the expected 403, 409 and 410: ' + refusalErrors.join(' | '));
  await carol.close();

  // A read token sees no buttons.
  const reader = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true });
  const readerPage = await reader.newPage();
  readerPage.on('console', (msg) => { if (msg.type() === 'error') consoleErrors.push('reader: ' + msg.text()); });
  readerPage.on('request', (request) => { if (new URL(request.url()).origin !== origin) foreign.push(request.url()); });
  await readerPage.goto(origin + '/ui/approvals/' + jobB.approval_id);
  await readerPage.fill('#token', RITA);
  await readerPage.click('#signin-form button[type=submit]');
  await readerPage.waitForSelector('#read-only');
  check((await readerPage.$$('#approve, #reject')).length === 0, 'a read token sees no Approve or Reject button');
  check(await readerPage.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1),
    'the evidence pack fits a 390 px phone screen without sideways scrolling');

  // A job held under the policy before the change is explained under that policy, and the page
  // says plainly that the policy changed and what the policy in force now would do.
  const evidenceC = (await rest('/api/v1/approvals/' + jobC.approval_id + '/evidence', RITA)).body;
  check(evidenceC.snapshot_current === false && evidenceC.policy_snapshot_held === jobC.policy_snapshot &&
    evidenceC.explain.conditions.some((c) => c.key === 'payload.amount' && c.test === 'gt 100') &&
    evidenceC.explain_current.conditions.some((c) => c.key === 'payload.amount' && c.test === 'gt 500'),
  'evidence: explained under the snapshot it was held under (gt 100), and under the policy now (gt 500)');
  await readerPage.goto(origin + '/ui/approvals/' + jobC.approval_id);
  await readerPage.waitForSelector('#policy-changed');
  const changedNote = await readerPage.textContent('#policy-changed');
  check(changedNote.includes('The policy changed since this job was held') && changedNote.includes('hold it for approval by rule hold-large-payments'),
    'the page says the policy changed and what the policy now would do: ' + changedNote);
  check((await readerPage.textContent('#conditions')).includes('gt 100') && (await readerPage.textContent('#conditions-current')).includes('gt 500'),
    'the page shows why it was held then (gt 100) and the conditions of the policy now (gt 500)');

  // The API takes no cookie-only authentication (CSRF), and answers no cross-origin preflight.
  const cookieOnly = await fetch(origin + '/api/v1/approvals/' + jobB.approval_id + '/approve', {
    method: 'POST', headers: { Cookie: 'token=' + ALICE, 'Content-Type': 'application/json' }, body: '{}',
  });
  check(cookieOnly.status === 401, 'a cookie without Authorization is refused (401)');
  const preflight = await fetch(origin + '/api/v1/approvals', { method: 'OPTIONS', headers: { Origin: 'https://evil.example' } });
  check(preflight.status >= 400 && !preflight.headers.get('access-control-allow-origin'), 'no CORS: a cross-origin page cannot call the API');

  // countersign restarts under an open list: the event stream breaks, the page says
  // "reconnecting", reconnects with the Last-Event-ID it saw last (the old process's, so it is
  // told to resync), reloads the list, and a job held after the restart appears without reload.
  await page.goto(origin + '/ui/');
  await page.waitForSelector('body[data-live="1"]');
  const beforeRestart = await hold('before-restart-' + Date.now(), { env: 'production', amount: 601 });
  await page.waitForSelector(`#rows tr[data-id="${beforeRestart.approval_id}"]`, { timeout: 2000 });
  const streamRequests = [];
  let listReloads = 0;
  page.on('request', (request) => {
    const path = new URL(request.url()).pathname;
    if (path === '/api/v1/events') streamRequests.push(request.headers()['last-event-id'] || '');
    if (path === '/api/v1/approvals') listReloads++;
  });
  const wentOff = page.waitForSelector('body[data-live="0"]', { timeout: 20000 });
  await stack.restartGateway();
  await wentOff;
  const afterRestart = await hold('after-restart-' + Date.now(), { env: 'production', amount: 602 });
  await page.waitForSelector(`#rows tr[data-id="${afterRestart.approval_id}"]`, { timeout: 20000 });
  await page.waitForSelector('body[data-live="1"]', { timeout: 5000 });
  check(streamRequests.length > 0 && streamRequests.every((id) => /^[0-9a-f]{16}-\d+$/.test(id)),
    'after countersign restarted the page reconnected with Last-Event-ID (' + streamRequests.join(', ') + ')');
  check(listReloads > 0, 'told to resync (the id is the old process\'s), the page loaded the list again');
  check((await page.$$(`#rows tr[data-id="${beforeRestart.approval_id}"]`)).length === 1,
    'a job held after the restart appears without reload, and the list still holds the one from before');
  consoleErrors.splice(0, consoleErrors.length, ...consoleErrors.filter((e) => !/net::ERR_/.test(e)));  // while it was down

  // Sign out clears the token.
  await page.click('#signout');
  check(await page.evaluate(() => sessionStorage.getItem('countersign.token') === null) && await page.isVisible('#signin'),
    'Sign out clears the token');

  check(dialogs.length === 0 && !(await page.evaluate(() => window.__xss)) && !(await readerPage.evaluate(() => window.__xss)),
    'no script from payloads, headers or reasons ran');
  check(foreign.length === 0, 'no request left the admin origin: ' + foreign.join(' '));
  check(consoleErrors.length === 0, 'no console errors: ' + consoleErrors.join(' | '));
  const gatewayLog = stack.gatewayLog();
  check(gatewayLog.length > 0 && ![ALICE, BOB, CAROL, RITA].some((token) => gatewayLog.includes(token)),
    'no token appears in countersign\'s log (' + gatewayLog.length + ' bytes read)');

  if (screenshots) await takeScreenshots(browser, origin, hold, rest);

  await reader.close();
  await browser.close();
  await nc.close();
}

// Screenshots for the docs: the list and the evidence pack (a 2-of-2 wire with bob's vote, so
// that its timeline shows the signature badges of the held and vote events), desktop and phone.
async function takeScreenshots(browser, origin, hold, rest) {
  const samples = [
    [{ env: 'production', amount: 1250, currency: 'EUR', to: 'ACME GmbH', iban: 'DE89370400440532013000', card: { number: '4111111111111111' } }, 'agent-billing'],
    [{ env: 'production', amount: 640, currency: 'USD', to: 'Globex Ltd', memo: 'Invoice 2026-114' }, 'agent-payables'],
    [{ env: 'production', amount: 9800, currency: 'EUR', to: 'Initech', memo: 'Quarterly licence' }, 'agent-procurement'],
  ];
  for (const [body, who] of samples) {
    await hold('inv-' + Math.random().toString(36).slice(2, 8), body, { 'X-Requested-By': who });
  }
  const shown = await hold('wire-' + Math.random().toString(36).slice(2, 8),
    { env: 'production', amount: 48000, currency: 'EUR', to: 'Umbrella Corp', iban: 'FR7630006000011234567890189', memo: 'Plant 7 retrofit, 2nd tranche' },
    { 'X-Requested-By': 'agent-treasury' }, 'agents.jobs.finance.wire.send');
  const vote = await rest('/api/v1/approvals/' + shown.approval_id + '/approve', BOB, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ reason: 'matches the signed contract' }),
  });
  if (vote.body.status !== 'vote_recorded') throw new Error('bob\'s vote: ' + JSON.stringify(vote.body));
  for (const [name, viewport] of [['desktop', { width: 1280, height: 860 }], ['phone', { width: 390, height: 844 }]]) {
    const context = await browser.newContext({ viewport, deviceScaleFactor: 1, isMobile: name === 'phone' });
    const page = await context.newPage();
    await page.goto(origin + '/ui/');
    await page.fill('#token', ALICE);
    await page.click('#signin-form button[type=submit]');
    await page.waitForSelector('body[data-live="1"]');
    await page.waitForSelector('#rows tr');
    await sleep(1600);  // the new-row highlight fades
    await page.screenshot({ path: join(screenshots, `console-list-${name}.png`), fullPage: name === 'desktop' });
    await page.goto(origin + '/ui/approvals/' + shown.approval_id);
    await page.waitForSelector('#timeline li[data-signature="verified"] + li[data-signature="verified"]');
    await page.screenshot({ path: join(screenshots, `console-evidence-${name}.png`), fullPage: true });
    await context.close();
  }
  console.log('screenshots written to ' + screenshots);
}

let exitCode = 0;
try {
  await main();
} catch (error) {
  console.error(error.stack || String(error));
  exitCode = 1;
} finally {
  if (stack) await stack.stop();
}
if (failures > 0) exitCode = 1;
console.log(exitCode === 0 ? 'all browser checks passed' : 'browser checks FAILED');
process.exit(exitCode);
