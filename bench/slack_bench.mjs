// Benchmark: what the Slack bridge adds to a held job's way to Slack and to a click's way to the
// worker, through the fake Slack of the tests (HTTPS and WSS on loopback, a CA made for the run).
//
//   node bench/slack_bench.mjs COUNTERSIGN_BIN NATS_SERVER_BIN [HOLDS=250] [DECISIONS=200] [RATE=10]
//
// One nats-server, one gateway (`countersign run`), one bridge (`countersign bridge`, Socket
// Mode) and tests/fake_slack/fake_slack.js, all started here and stopped at the end. Prints a
// Markdown section (bench/run.sh --slack puts it into its results; bench/README.md explains it).
//
// 1. held -> post: HOLDS jobs are held, RATE per second. For each, the time from sending the hold
//    request to (a) the `held` event reaching a plain NATS subscriber of this process and (b) the
//    fake Slack receiving chat.postMessage for it. (b) - (a), per job, is what the bridge adds:
//    its JetStream consumer, the record read (control.get), the create-once post key, the HTTPS
//    call and the key's update. Run twice: with HTTP keep-alive (the fake keeps connections open)
//    and with the fake answering `Connection: close` to every call (a new TLS connection per call).
// 2. click -> delivered against approve -> delivered: DECISIONS held jobs are approved by a click
//    (a Socket Mode envelope from the fake, timed from its send) and DECISIONS others by an unsigned
//    1-of-1 control request over NATS (timed from its send), alternating, one at a time. Both end
//    when the released job reaches a worker subscribed to jobs.>. A plain subscriber to
//    countersign.control.approve times when each approve request reaches NATS: for a click, the
//    envelope's send -> that is the bridge's own share (the WebSocket hop, its queue, decoding,
//    the person's mapping, the Ed25519 signature), the rest the gateway's.
//    Then 600 control.get requests for the jobs of the second phase still pending, one at a
//    time from the benchmark: the bridge's record read on its own.
// 3. The bridge's CPU (user + system, /proc/<pid>/stat) over phase 1's keep-alive window, per
//    held job.
// 4. Where the bridge's time went, per post, from its log line `bridge: posted a held job`:
//    queued_ms (the event stored in the stream -> a lane takes it: the pull consumer and the lane's
//    queue), read_ms (the record read, control.get), claim_ms (the wait for the create-once post
//    key beyond the read: it is made while the record is read) and slack_ms (chat.postMessage);
//    per click, from `bridge: click acted on`: queued_ms (envelope read -> the click thread takes
//    it), sign_ms (decode, map, sign) and request_ms (the control request's round trip).
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(fileURLToPath(new URL('..', import.meta.url)));
const require = createRequire(join(root, 'tests/node/package.json'));
const nats = require('nats');
const nkeys = require('nkeys.js');

const argv = process.argv.slice(2);
// --get-ab OTHER_BIN: only the record read, this binary against another one side by side.
const abAt = argv.indexOf('--get-ab');
const otherBin = abAt >= 0 ? resolve(argv[abAt + 1]) : null;
const args = abAt >= 0 ? argv.filter((_, i) => i !== abAt && i !== abAt + 1) : argv;
const [countersignBin, natsServerBin] = args.slice(0, 2).map((p) => (p ? resolve(p) : p));
// Enough of each that a p99 is not simply the slowest one: with n samples it is the
// floor(0.99 n)-th smallest, the largest for n under 200.
const holds = Number(args[2] || 250);
const decisions = Number(args[3] || 200);
const rate = Number(args[4] || 10);
if (!countersignBin || !natsServerBin) {
  console.error('usage: slack_bench.mjs [--get-ab OTHER_BIN] COUNTERSIGN_BIN NATS_SERVER_BIN [HOLDS] [DECISIONS] [RATE]');
  process.exit(2);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);
const ticks = 100;  // USER_HZ
function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / ticks;
}
function quantile(values, q) {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}
const ms = (us) => (us / 1000).toFixed(2);

const dir = mkdtempSync(join(tmpdir(), 'countersign-slack-bench-'));
const children = [];
async function stopAll() {
  for (const child of children.reverse()) if (child.exitCode === null) child.kill('SIGTERM');
  await sleep(500);
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
}

// The bridge's `posted a held job` and `click acted on` log lines, by approval id.
const postTimings = new Map();
const clickTimings = new Map();
function readPostTimings(text) {
  for (const line of text.split('\n')) {
    const post = line.includes('"bridge: posted a held job"');
    if (!post && !line.includes('"bridge: click acted on"')) continue;
    try {
      const entry = JSON.parse(line);
      if (post && entry.read_ms !== undefined) postTimings.set(entry.id, entry);
      if (!post && entry.request_ms !== undefined) clickTimings.set(entry.id, entry);
    } catch { /* a line cut at a chunk boundary: the next chunk completes it */ }
  }
}

// Starts a process and resolves when its output matches `pattern`; `onLines` sees whole lines.
function start(bin, argv, pattern, env = {}, onLines = null, cwd = dir) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(bin, argv, { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    children.push(child);
    if (onLines) {
      let partial = '';
      child.stderr.on('data', (data) => {
        const text = partial + data;
        const cut = text.lastIndexOf('\n') + 1;
        partial = text.slice(cut);
        onLines(text.slice(0, cut));
      });
    }
    let output = '';
    const timer = setTimeout(() => reject(new Error(`${bin} did not start:\n${output}`)), 30000);
    const onData = (data) => {
      output += data;
      if (output.length > 65536) output = output.slice(-32768);
      const match = output.match(pattern);
      if (match) {
        clearTimeout(timer);
        resolvePromise({ child, match });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => reject(new Error(`${bin} exited with ${code}:\n${output}`)));
  });
}

// The policy both benchmarks use: payments are held.
function writeHoldPolicy(where) {
  writeFileSync(join(where, 'policy.yaml'), `version: v1
rules:
  - id: hold-payments
    when: { topic: finance.payment.execute }
    decision: require_human
`);
}

async function control(port, method, path, body) {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    method, body: body === undefined ? undefined : JSON.stringify(body),
  });
  return res.json();
}

const loadOf = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

async function main() {
  const loadBefore = loadOf();
  const server = await start(natsServerBin, ['-a', '127.0.0.1', '-p', '-1', '-js', '-sd', join(dir, 'js')],
    /Listening for client connections on [^\s]*:(\d+)/);
  const natsUrl = `nats://127.0.0.1:${server.match[1]}`;

  start(process.execPath, [join(root, 'tests/fake_slack/fake_slack.js'), dir], /$^/).catch(() => {});
  while (!existsSync(join(dir, 'ports.json'))) await sleep(50);
  const ports = JSON.parse(readFileSync(join(dir, 'ports.json'), 'utf8'));

  const bridgeKey = nkeys.createUser();
  writeFileSync(join(dir, 'slack.nk'), new TextDecoder().decode(bridgeKey.getSeed()) + '\n', { mode: 0o600 });
  const approvers = `approvers:
  people:
    - { name: alice, slack: U0ALICE }
    - { name: carol }
  channels:
    - { name: slack, keys: ["${bridgeKey.getPublicKey()}"], may_act_for: ["*"] }
`;
  writeHoldPolicy(dir);
  writeFileSync(join(dir, 'gateway.yaml'), `nats:
  servers: ["${natsUrl}"]
  embedded: false
policy:
  file: policy.yaml
routes:
  - { name: jobs, from: "agents.jobs.>", to: "jobs.>" }
admin:
  listen: "127.0.0.1:0"
${approvers}`);
  writeFileSync(join(dir, 'bridge.yaml'), `nats:
  servers: ["${natsUrl}"]
admin:
  listen: "127.0.0.1:0"
slack:
  api_url: https://127.0.0.1:${ports.api}/api
  ca_file: ca.pem
  mode: socket
  key_file: slack.nk
  backfill: 1h
  channels:
    - { topics: [">"], channel: C0BENCH }
${approvers}`);
  await start(countersignBin, ['run', '--config', join(dir, 'gateway.yaml')], /countersign ready/);
  const bridge = await start(countersignBin, ['bridge', '--config', join(dir, 'bridge.yaml')], /countersign bridge ready/,
    { SLACK_BOT_TOKEN: 'xoxb-fake', SLACK_APP_TOKEN: 'xapp-fake' }, readPostTimings);
  for (let i = 0; i < 200 && (await control(ports.control, 'GET', '/socket')).connected < 1; i++) await sleep(50);

  const nc = await nats.connect({ servers: natsUrl });
  const sc = nats.StringCodec();
  const heldSeen = new Map();  // approval id -> µs
  const heldSub = nc.subscribe('countersign.events.held.>');
  (async () => {
    for await (const m of heldSub) heldSeen.set(JSON.parse(sc.decode(m.data)).approval_id, nowUs());
  })();
  // Approve requests as they reach NATS (a plain subscriber gets a copy of each): approval id -> µs.
  const requestSeen = new Map();
  const requestSub = nc.subscribe('countersign.control.approve');
  (async () => {
    for await (const m of requestSub) {
      try { requestSeen.set(JSON.parse(sc.decode(m.data)).id, nowUs()); } catch { /* not JSON */ }
    }
  })();
  const delivered = new Map();  // n -> µs
  const waiters = new Map();
  const workerSub = nc.subscribe('jobs.>');
  (async () => {
    for await (const m of workerSub) {
      const n = JSON.parse(sc.decode(m.data)).n;
      delivered.set(n, nowUs());
      waiters.get(n)?.();
    }
  })();
  await nc.flush();

  let serial = 0;
  // Holds `count` jobs at `rate` per second; returns [{n, id, sent}].
  const holdJobs = async (count) => {
    const jobs = [];
    const pending = [];
    const t0 = Date.now();
    for (let i = 0; i < count; i++) {
      const due = t0 + (i * 1000) / rate;
      if (due > Date.now()) await sleep(due - Date.now());
      const n = serial++;
      const h = nats.headers();
      h.set('Nats-Msg-Id', `slack-bench-${n}`);
      const sent = nowUs();
      pending.push(nc.request('agents.jobs.finance.payment.execute', sc.encode(JSON.stringify({ n, amount: 500 })),
        { headers: h, timeout: 30000 }).then((m) => jobs.push({ n, id: JSON.parse(sc.decode(m.data)).approval_id, sent })));
    }
    await Promise.all(pending);
    return jobs;
  };
  // The chat.postMessage of each job, by approval id: {at_us, value}.
  const postsById = async () => {
    const out = new Map();
    for (const call of await control(ports.control, 'GET', '/calls')) {
      if (call.method !== 'chat.postMessage') continue;
      const actions = call.body.blocks.find((b) => b.type === 'actions');
      const value = actions.elements[0].value;
      out.set(JSON.parse(value).id, { at_us: call.at_us, value });
    }
    return out;
  };
  const waitPosts = async (ids) => {
    for (let i = 0; i < 600; i++) {
      const posts = await postsById();
      if (ids.every((id) => posts.has(id))) return posts;
      await sleep(100);
    }
    throw new Error('not every held job was posted');
  };
  const holdPhase = async (label) => {
    const cpuBefore = cpuSeconds(bridge.child.pid);
    const tlsBefore = (await control(ports.control, 'GET', '/connections')).tls;
    const jobs = await holdJobs(holds);
    const posts = await waitPosts(jobs.map((j) => j.id));
    const cpu = cpuSeconds(bridge.child.pid) - cpuBefore;
    const tls = (await control(ports.control, 'GET', '/connections')).tls - tlsBefore;
    const total = jobs.map((j) => posts.get(j.id).at_us - j.sent);
    const event = jobs.map((j) => heldSeen.get(j.id) - j.sent);
    const added = jobs.map((j) => posts.get(j.id).at_us - heldSeen.get(j.id));
    return { label, jobs, posts, total, event, added, cpu, tls };
  };

  await sleep(1000);
  const kept = await holdPhase('keep-alive');
  await control(ports.control, 'POST', '/keepalive', { enabled: false });
  await sleep(1000);
  const closed = await holdPhase('new TLS connection per call');
  await control(ports.control, 'POST', '/keepalive', { enabled: true });

  // Decisions, alternating: a click in Slack, then a control request over NATS.
  const waitDelivered = (n) => new Promise((resolvePromise, reject) => {
    if (delivered.has(n)) return resolvePromise();
    const timer = setTimeout(() => reject(new Error(`job ${n} was not delivered`)), 30000);
    waiters.set(n, () => { clearTimeout(timer); resolvePromise(); });
  });
  // Jobs of both phases are decided (the keep-alive phase's first); the rest of the second
  // phase stays pending for the record reads below.
  const pool = [...kept.jobs, ...closed.jobs].slice(0, 2 * decisions);
  const undecided = closed.jobs.slice(Math.max(0, pool.length - kept.jobs.length));
  if (undecided.length === 0) throw new Error('DECISIONS must leave jobs of the second phase pending: at most HOLDS - 1');
  const postOf = (id) => kept.posts.get(id) ?? closed.posts.get(id);
  const click = [];
  const approve = [];
  const clickRequest = [];  // envelope sent -> the bridge's control request at the plain subscriber
  const clickGateway = [];  // that request -> delivered
  const approveRequest = [];  // the benchmark's request sent -> at the plain subscriber
  await sleep(1000);
  const cpuBefore = cpuSeconds(bridge.child.pid);
  for (let i = 0; i < pool.length; i++) {
    const job = pool[i];
    if (i % 2 === 0) {
      const payload = {
        type: 'block_actions', user: { id: 'U0ALICE', username: 'alice' },
        container: { type: 'message', channel_id: 'C0BENCH', message_ts: '1700000000.000001' },
        actions: [{ type: 'button', action_id: 'countersign_approve', block_id: `countersign:${job.id}`,
                    value: postOf(job.id).value }],
      };
      const done = waitDelivered(job.n);
      const sent = await control(ports.control, 'POST', '/socket/send', { payload });
      await done;
      click.push(delivered.get(job.n) - sent.sent_at_us);
      if (requestSeen.has(job.id)) {
        clickRequest.push(requestSeen.get(job.id) - sent.sent_at_us);
        clickGateway.push(delivered.get(job.n) - requestSeen.get(job.id));
      }
    } else {
      const done = waitDelivered(job.n);
      const sent = nowUs();
      const reply = await nc.request('countersign.control.approve', sc.encode(JSON.stringify({ id: job.id, approver: 'carol' })),
        { timeout: 10000 });
      if (JSON.parse(sc.decode(reply.data)).status !== 'approved') throw new Error(sc.decode(reply.data));
      await done;
      approve.push(delivered.get(job.n) - sent);
      if (requestSeen.has(job.id)) approveRequest.push(requestSeen.get(job.id) - sent);
    }
    await sleep(50);
  }
  const decisionCpu = cpuSeconds(bridge.child.pid) - cpuBefore;

  // The bridge's record read on its own: control.get of the pending jobs of the second phase, one
  // request at a time, from the benchmark.
  const gets = [];
  for (let i = 0; i < 600; i++) {
    const sent = nowUs();
    const reply = await nc.request('countersign.control.get', sc.encode(JSON.stringify({ id: undecided[i % undecided.length].id })),
      { timeout: 10000 });
    gets.push(nowUs() - sent);
    if (JSON.parse(sc.decode(reply.data)).record?.state !== 'pending') throw new Error(sc.decode(reply.data));
  }
  await nc.drain();

  const loadAfter = loadOf();
  // The bridge's own steps per post (its log), keep-alive phase; the worst posts' steps.
  const stepLines = (phase) => {
    const timings = phase.jobs.map((j) => postTimings.get(j.id)).filter(Boolean);
    if (timings.length === 0) return ['(the bridge logged no step timings)', ''];
    const steps = ['queued_ms', 'read_ms', 'claim_ms', 'slack_ms'];
    const us = (entry, step) => Number(entry[step]) * 1000;
    const worst = phase.jobs.map((j, i) => ({ added: phase.added[i], t: postTimings.get(j.id) }))
      .filter((x) => x.t).sort((a, b) => b.added - a.added).slice(0, 3);
    return [
      `The bridge's steps per post (its log line \`posted a held job\`, ${phase.label} phase, ${timings.length} posts), ` +
        'p50 / p99 ms: ' + steps.map((step) => `${step.replace('_ms', '')} ` +
        `${ms(quantile(timings.map((t) => us(t, step)), 0.5))} / ${ms(quantile(timings.map((t) => us(t, step)), 0.99))}`).join(', ') +
        '. The three slowest posts by what the bridge adds, with their steps: ' + worst.map((x) => `${ms(x.added)} ms (` +
        steps.map((step) => `${step.replace('_ms', '')} ${Number(x.t[step]).toFixed(2)}`).join(', ') + ')').join('; ') +
        '. The steps are timed by the bridge from the event\'s time in the stream, the benchmark from the event at ' +
        'its own subscriber, so they need not add up; the time between the steps and the HTTPS hop are in neither.',
      '',
    ];
  };
  // The bridge's own steps per click (its log line `click acted on`).
  const clickStepLines = (jobs) => {
    const timings = jobs.map((j) => clickTimings.get(j.id)).filter(Boolean);
    if (timings.length === 0) return ['(the bridge logged no click timings)', ''];
    const steps = ['queued_ms', 'sign_ms', 'request_ms'];
    return [
      `The bridge's steps per click (its log line \`click acted on\`, ${timings.length} clicks), p50 / p99 ms: ` +
        steps.map((step) => `${step.replace('_ms', '')} ${ms(quantile(timings.map((t) => Number(t[step]) * 1000), 0.5))} / ` +
          `${ms(quantile(timings.map((t) => Number(t[step]) * 1000), 0.99))}`).join(', ') +
        ' (queued: the envelope read -> the click thread takes it; sign: decode, map the user, sign; request: the ' +
        'control request\'s round trip, the gateway\'s part).',
      '',
    ];
  };
  // What the bridge adds without the record read's round trip (the gateway's answer to its
  // control.get, timed by the bridge), per post with step timings.
  const ownOf = (phase) => phase.jobs.map((j, i) => ({ added: phase.added[i], t: postTimings.get(j.id) }))
    .filter((x) => x.t).map((x) => x.added - Number(x.t.read_ms) * 1000);
  // Per click, by the bridge's clock: the envelope read -> its control request sent (queued + sign).
  const clickOwn = pool.filter((_, i) => i % 2 === 0).map((j) => clickTimings.get(j.id)).filter(Boolean)
    .map((t) => (Number(t.queued_ms) + Number(t.sign_ms)) * 1000);
  const row = (what, values) => `| ${what} | ${values.length} | ${ms(quantile(values, 0.5))} | ${ms(quantile(values, 0.99))} |`;
  const lines = [
    '### Slack bridge (bench/slack_bench.mjs)',
    '',
    `Through the fake Slack over TLS on loopback; ${holds} holds per phase at ${rate}/s, ${decisions} clicks and ` +
      `${decisions} NATS approvals alternating, one at a time. Load average (1/5/15 min) before: ${loadBefore}; ` +
      `after: ${loadAfter}.`,
    '',
    '| path | n | p50 ms | p99 ms |',
    '|---|---|---|---|',
    row('hold sent -> `held` event at a plain subscriber', kept.event),
    row('hold sent -> chat.postMessage at Slack (keep-alive)', kept.total),
    row('**bridge adds** (post - event, per job; keep-alive)', kept.added),
    row('of that, **the bridge\'s own** (without the record read\'s round trip: the gateway\'s answer)', ownOf(kept)),
    row('hold sent -> chat.postMessage at Slack (new TLS connection per call)', closed.total),
    row('bridge adds (post - event, per job; new TLS connection per call)', closed.added),
    row('control.get round trip from the benchmark (a pending job: the record read), one at a time', gets),
    row('approve request sent (NATS, unsigned, 1-of-1) -> delivered', approve),
    row('click envelope sent (Socket Mode) -> delivered', click),
    row('click envelope sent -> its control request at a plain NATS subscriber (**the bridge\'s own share**)', clickRequest),
    row('of that, the bridge\'s own by its clock (envelope read -> its request sent: queue, decode, map, sign)', clickOwn),
    row('approve request sent -> at a plain NATS subscriber (the same hop without the bridge)', approveRequest),
    row('the click\'s control request at the subscriber -> delivered (the gateway)', clickGateway),
    '',
    `Click -> delivered against approve -> delivered: p50 ${(quantile(click, 0.5) / quantile(approve, 0.5)).toFixed(2)}x, ` +
      `p99 ${(quantile(click, 0.99) / quantile(approve, 0.99)).toFixed(2)}x; the click adds ` +
      `${ms(quantile(click, 0.5) - quantile(approve, 0.5))} ms at p50 and ${ms(quantile(click, 0.99) - quantile(approve, 0.99))} ms at p99.`,
    '',
    ...stepLines(kept),
    ...clickStepLines(pool.filter((_, i) => i % 2 === 0)),
    `Bridge CPU per held job (keep-alive phase): ${((kept.cpu / holds) * 1e3).toFixed(2)} ms ` +
      `(${kept.tls} new TLS connection(s) for ${holds} posts); with a new TLS connection per call: ` +
      `${((closed.cpu / holds) * 1e3).toFixed(2)} ms (${closed.tls} connections). Bridge CPU per decision in the ` +
      `decision phase (clicks act, and every decision's events update the message): ` +
      `${((decisionCpu / pool.length) * 1e3).toFixed(2)} ms. CPU time has 10 ms ticks: per-job values are averages ` +
      'over the phase.',
    '',
  ];
  console.log(lines.join('\n'));
}

// --get-ab: two gateways on one nats-server, this binary (A) and OTHER_BIN (B), each with its
// own control prefix, bucket, audit stream and intake subjects. HOLDS jobs are held on each, then
// 10 x HOLDS control.get requests are sent, alternating A, B, A, B, one at a time, so that both
// see the same moments of the machine.
async function getAb() {
  const loadBefore = loadOf();
  const server = await start(natsServerBin, ['-a', '127.0.0.1', '-p', '-1', '-js', '-sd', join(dir, 'js')],
    /Listening for client connections on [^\s]*:(\d+)/);
  const natsUrl = `nats://127.0.0.1:${server.match[1]}`;
  const sides = [{ name: 'a', bin: countersignBin }, { name: 'b', bin: otherBin }];
  for (const side of sides) {
    const cwd = join(dir, side.name);
    mkdirSync(cwd);
    writeHoldPolicy(cwd);
    writeFileSync(join(cwd, 'gateway.yaml'), `nats:
  servers: ["${natsUrl}"]
  embedded: false
policy:
  file: policy.yaml
routes:
  - { name: jobs, from: "${side.name}.jobs.>", to: "${side.name}.out.>" }
control:
  prefix: cs${side.name}
store:
  bucket: approvals_${side.name}
audit:
  stream: AUDIT_${side.name.toUpperCase()}
admin:
  listen: "127.0.0.1:0"
`);
    await start(side.bin, ['run', '--config', join(cwd, 'gateway.yaml')], /countersign ready/, {}, null, cwd);
  }
  const nc = await nats.connect({ servers: natsUrl });
  const sc = nats.StringCodec();
  for (const side of sides) {
    side.ids = [];
    for (let n = 0; n < holds; n++) {
      const reply = await nc.request(`${side.name}.jobs.finance.payment.execute`, sc.encode(JSON.stringify({ n, amount: 500 })),
        { timeout: 10000 });
      side.ids.push(JSON.parse(sc.decode(reply.data)).approval_id);
    }
    side.times = [];
  }
  await sleep(500);
  for (let i = 0; i < 10 * holds; i++) {
    for (const side of i % 2 === 0 ? sides : [...sides].reverse()) {
      const sent = nowUs();
      const reply = await nc.request(`cs${side.name}.control.get`, sc.encode(JSON.stringify({ id: side.ids[i % holds] })),
        { timeout: 10000 });
      side.times.push(nowUs() - sent);
      if (JSON.parse(sc.decode(reply.data)).record?.state !== 'pending') throw new Error(sc.decode(reply.data));
    }
  }
  await nc.drain();
  const q = (side, p) => ms(quantile(side.times, p));
  console.log([
    '| control.get of a pending job, one at a time | n | p50 ms | p90 ms | p99 ms |',
    '|---|---|---|---|---|',
    ...sides.map((side) => `| ${side.name.toUpperCase()}: ${side.bin} | ${side.times.length} | ${q(side, 0.5)} | ` +
      `${q(side, 0.9)} | ${q(side, 0.99)} |`),
    '',
    `Load average (1/5/15 min) before: ${loadBefore}; after: ${loadOf()}.`,
  ].join('\n'));
}

try {
  await (otherBin ? getAb() : main());
} catch (e) {
  console.error(`slack_bench: ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await stopAll();
}
