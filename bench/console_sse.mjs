// Benchmark: what open console event streams cost countersign while it holds jobs.
//
//   node bench/console_sse.mjs COUNTERSIGN_BIN NATS_SERVER_BIN [RATE=1000] [STREAMS=50] [SECONDS=15]
//
// Holds RATE jobs per second for SECONDS, first with no /api/v1/events client (the baseline),
// then with STREAMS clients reading the stream, against the same countersign process, and
// compares countersign's CPU time (user + system, from /proc/<pid>/stat) over each window.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { resolve } from 'node:path';

import { ALICE, nats, runWithStack, sleep } from '../tests/browser/harness.mjs';

const args = process.argv.slice(2);
const load = () => loadavg().map((x) => x.toFixed(2)).join(' ');
const [countersignBin, natsServerBin] = args.slice(0, 2).map((p) => (p ? resolve(p) : p));
const rate = Number(args[2] || 1000);
const streams = Number(args[3] || 50);
const seconds = Number(args[4] || 15);
if (!countersignBin || !natsServerBin) {
  console.error('usage: console_sse.mjs COUNTERSIGN_BIN NATS_SERVER_BIN [RATE] [STREAMS] [SECONDS]');
  process.exit(2);
}

const ticks = 100;  // USER_HZ on Linux
function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / ticks;  // utime, stime
}

// The admin I/O thread (it writes every stream) by name: its CPU is the streams' own cost,
// which the whole process's CPU shows only through the noise of the holds around it.
// Every thread's CPU, summed by thread name.
function threadsCpuSeconds(pid) {
  const byName = new Map();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    byName.set(name, (byName.get(name) || 0) + (Number(fields[11]) + Number(fields[12])) / ticks);
  }
  return byName;
}

await runWithStack(countersignBin, natsServerBin, async (stack) => {
  const nc = await nats.connect({ servers: stack.natsUrl });
  const sc = nats.StringCodec();
  let serial = 0;
  let held = 0;
  // RATE holds per second in 10 ms slices; returns the holds answered 202.
  const holdFor = async (secs) => {
    const start = Date.now();
    const pending = [];
    let sent = 0;
    while (Date.now() - start < secs * 1000) {
      const due = Math.floor(((Date.now() - start) / 1000) * rate);
      for (; sent < due; sent++) {
        const h = nats.headers();
        h.set('Nats-Msg-Id', 'sse-' + serial++);
        pending.push(nc.request('agents.jobs.finance.payment.execute',
          sc.encode(JSON.stringify({ env: 'production', amount: 500 })), { headers: h, timeout: 30000 })
          .then((m) => { if (JSON.parse(sc.decode(m.data)).code === 202) held++; }));
      }
      await sleep(10);
    }
    await Promise.allSettled(pending);
    return sent;
  };

  const measure = async (label) => {
    const before = cpuSeconds(stack.gateway.pid);
    const threadsBefore = threadsCpuSeconds(stack.gateway.pid);
    const t0 = Date.now();
    const sent = await holdFor(seconds);
    const cpu = cpuSeconds(stack.gateway.pid) - before;
    const wall = (Date.now() - t0) / 1000;
    const threads = new Map([...threadsCpuSeconds(stack.gateway.pid)].map(([name, secs]) => [name, (secs - (threadsBefore.get(name) || 0)) / wall]));
    const io = threads.get('cs-admin-io') || 0;
    perThread.push(threads);
    console.log(`${label}: ${sent} holds in ${wall.toFixed(1)} s, countersign CPU ${cpu.toFixed(2)} s = ${(100 * cpu / wall).toFixed(1)}% of a core, ${(1e6 * cpu / sent).toFixed(0)} us per hold; ` +
      `admin I/O thread ${(100 * io).toFixed(2)}% of a core (load average ${load()})`);
    ioShare.push(io);
    return cpu / sent;  // per hold: the two windows may not send quite the same number
  };
  const ioShare = [];
  const perThread = [];

  await holdFor(2);  // warm up
  const baseline = await measure('no event streams');

  // The readers are curl processes (not this busy event loop), so each keeps up like a browser.
  const readers = [];
  for (let i = 0; i < streams; i++) {
    // --max-time ends each reader after the window (killed, curl would not print the byte count).
    const curl = spawn('curl', ['-sN', '--noproxy', '*', '--max-time', String(seconds + 10), '-H', 'Authorization: Bearer ' + ALICE,
      '-o', '/dev/null', '-w', '%{size_download}', stack.origin + '/api/v1/events'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    curl.stdout.on('data', (d) => { out += d; });
    readers.push({ curl, done: new Promise((done) => curl.on('exit', () => done(Number(out) || 0))) });
  }
  await sleep(1000);
  const withStreams = await measure(`${streams} event streams`);
  const open = readers.filter((r) => r.curl.exitCode === null).length;  // none dropped
  const bytes = (await Promise.all(readers.map((r) => r.done))).reduce((x, y) => x + y, 0);
  await nc.close();

  console.log(`\n| run | countersign CPU per hold (us) | ratio to baseline |\n|---|---|---|`);
  console.log(`| ${rate} holds/s, no streams | ${(1e6 * baseline).toFixed(0)} | 1.000 |`);
  console.log(`| ${rate} holds/s, ${streams} streams | ${(1e6 * withStreams).toFixed(0)} | ${(withStreams / baseline).toFixed(3)} |`);
  console.log(`| admin I/O thread (writes the streams), points of a core | ${(100 * ioShare[0]).toFixed(2)} -> ${(100 * ioShare[1]).toFixed(2)} | |`);
  const names = [...new Set([...perThread[0].keys(), ...perThread[1].keys()])]
    .map((name) => [name, (perThread[1].get(name) || 0) - (perThread[0].get(name) || 0)])
    .sort((a, b) => Math.abs(b[1]) - Math.abs(a[1])).slice(0, 6);
  console.log(`\nby thread, points of a core with streams minus without: ${names.map(([n, d]) => `${n} ${(100 * d).toFixed(2)}`).join(', ')}`);
  console.log(`\nadded at ${rate} holds/s: ${(100 * rate * (withStreams - baseline)).toFixed(1)} percentage points of one core ` +
    `(goal under 5); ${open} of ${streams} streams still open at the end, ${(bytes / 1e6).toFixed(1)} MB received; ${held} holds answered 202`);
});
