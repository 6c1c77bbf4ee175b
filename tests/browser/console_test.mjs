// The reviewer console in a real browser: Debian's chromium (headless) driven by playwright-core,
// against the real countersign binary and a real nats-server, with a worker subscription from
// the official NATS client counting deliveries.
//
//   node tests/browser/console_test.mjs COUNTERSIGN_BIN NATS_SERVER_BIN [--screenshots DIR]
//
// Exits 0 when every check passed; prints each check and fails on the first that does not hold.
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { ALICE, RITA, chromium, nats, policy, sleep, startStack } from './harness.mjs';

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

  const hold = async (jobId, body, extraHeaders = {}) => {
    const h = natsHeaders();
    h.set('Nats-Msg-Id', jobId);
    for (const [k, v] of Object.entries(extraHeaders)) h.set(k, v);
    const reply = await nc.request('agents.jobs.finance.payment.execute', sc.encode(JSON.stringify(body)), { headers: h, timeout: 5000 });
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

  // The policy changes under a page that shows a job: approve answers 409 in words, nothing runs.
  const jobB = await hold('pay-b-' + Date.now(), { env: 'production', amount: 900 });
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

  // The API takes no cookie-only authentication (CSRF), and answers no cross-origin preflight.
  const cookieOnly = await fetch(origin + '/api/v1/approvals/' + jobB.approval_id + '/approve', {
    method: 'POST', headers: { Cookie: 'token=' + ALICE, 'Content-Type': 'application/json' }, body: '{}',
  });
  check(cookieOnly.status === 401, 'a cookie without Authorization is refused (401)');
  const preflight = await fetch(origin + '/api/v1/approvals', { method: 'OPTIONS', headers: { Origin: 'https://evil.example' } });
  check(preflight.status >= 400 && !preflight.headers.get('access-control-allow-origin'), 'no CORS: a cross-origin page cannot call the API');

  // Sign out clears the token.
  await page.click('#signout');
  check(await page.evaluate(() => sessionStorage.getItem('countersign.token') === null) && await page.isVisible('#signin'),
    'Sign out clears the token');

  check(dialogs.length === 0 && !(await page.evaluate(() => window.__xss)) && !(await readerPage.evaluate(() => window.__xss)),
    'no script from payloads, headers or reasons ran');
  check(foreign.length === 0, 'no request left the admin origin: ' + foreign.join(' '));
  check(consoleErrors.length === 0, 'no console errors: ' + consoleErrors.join(' | '));

  if (screenshots) await takeScreenshots(browser, origin, hold);

  await reader.close();
  await browser.close();
  await nc.close();
}

// Screenshots for the docs: the list and the evidence pack, desktop and phone.
async function takeScreenshots(browser, origin, hold) {
  const samples = [
    [{ env: 'production', amount: 1250, currency: 'EUR', to: 'ACME GmbH', iban: 'DE89370400440532013000', card: { number: '4111111111111111' } }, 'agent-billing'],
    [{ env: 'production', amount: 640, currency: 'USD', to: 'Globex Ltd', memo: 'Invoice 2026-114' }, 'agent-payables'],
    [{ env: 'production', amount: 9800, currency: 'EUR', to: 'Initech', memo: 'Quarterly licence' }, 'agent-procurement'],
  ];
  let first = null;
  for (const [body, who] of samples) {
    const held = await hold('inv-' + Math.random().toString(36).slice(2, 8), body, { 'X-Requested-By': who });
    first = first || held;
  }
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
    await page.goto(origin + '/ui/approvals/' + first.approval_id);
    await page.waitForSelector('#timeline');
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
