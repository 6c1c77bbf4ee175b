// Benchmark: the reviewer console's list with many pending approvals, in headless chromium.
//
//   node bench/console_list.mjs COUNTERSIGN_BIN NATS_SERVER_BIN [PENDING=10000]
//
// Holds PENDING jobs through a real countersign and nats-server, then measures in the page:
//   sign in  the click to every item listed (the list API pages plus rendering), cold (the
//            process's first list loads its list index) and warm, split on the page's clock
//   fetch    the same API pages fetched by the page without rendering (the baseline)
//   filter   typing a topic filter until the rows are redrawn (median of 5)
//   clear    clearing it again (all PENDING items sorted and the first page drawn; median of 5)
//   and, over NATS, 9 `list` requests with a state filter at once (median of 5 rounds)
// and prints each with its ratio to the baseline. Goal: load, render and filter within 1 s.
import { loadavg } from 'node:os';
import { resolve } from 'node:path';

import { ALICE, chromium, nats, runWithStack } from '../tests/browser/harness.mjs';

const load = () => loadavg().map((x) => x.toFixed(2)).join(' ');
const [countersignBin, natsServerBin] = process.argv.slice(2, 4).map((p) => (p ? resolve(p) : p));
const pending = Number(process.argv[4] || 10000);
if (!countersignBin || !natsServerBin) {
  console.error('usage: console_list.mjs COUNTERSIGN_BIN NATS_SERVER_BIN [PENDING]');
  process.exit(2);
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

await runWithStack(countersignBin, natsServerBin, async (stack) => {
  const nc = await nats.connect({ servers: stack.natsUrl });
  const sc = nats.StringCodec();
  const topics = ['finance.payment.execute', 'finance.refund.execute', 'finance.payroll.run', 'finance.fx.trade'];
  const holdStart = Date.now();
  for (let i = 0; i < pending; i += 500) {
    const batch = [];
    for (let j = i; j < Math.min(pending, i + 500); j++) {
      const h = nats.headers();
      h.set('Nats-Msg-Id', 'bench-' + String(j).padStart(6, '0'));
      batch.push(nc.request('agents.jobs.' + topics[j % topics.length],
        sc.encode(JSON.stringify({ env: 'production', amount: 101 + j })), { headers: h, timeout: 30000 }));
    }
    await Promise.all(batch);
  }
  console.log(`held ${pending} jobs in ${Date.now() - holdStart} ms (load average ${load()})`);

  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'], headless: true });
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  await page.goto(stack.origin + '/ui/');

  // Signing in loads the whole list. Measured from the click until the count shows every item,
  // and, on the page's clock: the sign-in request, the page's list requests (first sent to last
  // answered) and the last answer to the drawn list.
  const signIn = async () => {
    await page.fill('#token', ALICE);
    await page.evaluate((n) => {
      window.__clicked = 0;
      window.__drawn = 0;
      document.querySelector('#signin-form button[type=submit]').addEventListener('click', () => { window.__clicked = performance.now(); }, { capture: true, once: true });
      new MutationObserver((_, observer) => {
        if (document.getElementById('count').textContent.startsWith(n + ' ')) { window.__drawn = performance.now(); observer.disconnect(); }
      }).observe(document.getElementById('count'), { childList: true, characterData: true, subtree: true });
    }, pending);
    const t0 = Date.now();
    await page.click('#signin-form button[type=submit]');
    await page.waitForFunction(() => window.__drawn > 0, null, { timeout: 120000 });
    const total = Date.now() - t0;
    const [inPage, whoami, pages, draw, first] = await page.evaluate(() => {
      const entries = performance.getEntriesByType('resource').filter((e) => e.startTime >= window.__clicked);
      const lists = entries.filter((e) => e.name.includes('/api/v1/approvals?'));
      const who = entries.find((e) => e.name.includes('/api/v1/whoami'));
      const last = Math.max(...lists.map((e) => e.responseEnd));
      return [window.__drawn - window.__clicked, who ? who.responseEnd - who.startTime : 0,
        last - Math.min(...lists.map((e) => e.startTime)), window.__drawn - last,
        lists.length ? lists[0].responseEnd - lists[0].startTime : 0];
    });
    return { total, inPage, whoami, pages, draw, first };
  };
  // Cold: the first list of this countersign process loads its list index from the bucket.
  const cold = await signIn();
  await page.click('#signout');
  await page.evaluate(() => performance.clearResourceTimings());
  const warm = await signIn();

  // Baseline: the list's API pages, fetched by the page, nothing rendered.
  const fetchMs = await page.evaluate(async (token) => {
    const t0 = performance.now();
    let after = '';
    let n = 0;
    do {
      const r = await fetch('/api/v1/approvals?limit=1000&state=pending' + (after ? '&after=' + encodeURIComponent(after) : ''),
        { headers: { Authorization: 'Bearer ' + token } });
      const body = await r.json();
      n += body.items.length;
      after = body.next_after || '';
    } while (after);
    return performance.now() - t0;
  }, ALICE);

  // The NATS `list` request with a state filter, 9 at once (as 9 reviewers' tools would ask).
  const listRound = async () => {
    const t = performance.now();
    await Promise.all(Array.from({ length: 9 }, () => nc.request('countersign.control.list',
      sc.encode(JSON.stringify({ state: 'pending', limit: 100 })), { timeout: 30000 })));
    return performance.now() - t;
  };
  const natsRounds = [];
  for (let i = 0; i < 5; i++) natsRounds.push(await listRound());

  const timeFilter = (value) => page.evaluate(async (text) => {
    const input = document.getElementById('topic');
    const t = performance.now();
    input.value = text;
    input.dispatchEvent(new Event('input'));
    await new Promise((done) => requestAnimationFrame(() => setTimeout(done, 0)));  // painted
    return performance.now() - t;
  }, value);
  const filters = [];
  const clears = [];
  for (let i = 0; i < 5; i++) {
    filters.push(await timeFilter('finance.payroll.*'));
    clears.push(await timeFilter(''));
  }
  const shown = await page.textContent('#count');
  await browser.close();
  await nc.close();

  const rows = [
    ['fetch (baseline)', fetchMs],
    ['9 NATS lists at once (median of 5 rounds)', median(natsRounds)],
    ...[['cold', cold], ['warm', warm]].flatMap(([name, l]) => [
      [`sign in, ${name} (click to all ${pending} listed)`, l.total],
      ['  in the page: click to list drawn', l.inPage],
      ['  of which sign-in (whoami)', l.whoami],
      ['  of which the list requests', l.pages],
      ['    of which the first', l.first],
      ['  of which last answer to list drawn', l.draw],
    ]),
    ['filter by topic', median(filters)],
    ['clear the filter', median(clears)],
  ];
  console.log(`\n${pending} pending approvals, headless chromium (${shown}); load average ${load()}\n`);
  console.log('| step | ms | ratio to fetch |\n|---|---|---|');
  for (const [name, ms] of rows) console.log(`| ${name} | ${ms.toFixed(1)} | ${(ms / fetchMs).toFixed(3)} |`);
  // Clearing the filter sorts all PENDING items and draws the first page: the full render.
  const worst = Math.max(median(filters), median(clears));
  const all = cold.total + worst;
  console.log(`\nload (cold) + render + filter of ${pending} items: ${all.toFixed(0)} ms (goal 1000 ms: ${all < 1000 ? 'met' : 'NOT met'}); ` +
    `warm ${(warm.total + worst).toFixed(0)} ms; the list requests ${cold.pages.toFixed(0)} ms cold, ${warm.pages.toFixed(0)} ms warm`);
});
