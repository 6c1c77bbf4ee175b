// What a KV key watcher costs nats-server per write, by the kind of consumer it keeps (the
// experiment behind the key watcher's catch-up passes, bench/README.md "Round seven"): sequential
// KV creates of 1.1 KB values into a history-1 file bucket on a nats-server of its own, with, on a
// second connection,
//   none      no watcher;
//   push      an ordered push consumer, headers only, kept for the whole round (the watcher as it
//             was: every write is delivered as it is stored);
//   pull      a pull consumer (AckAll, as nats-server 2.9 requires an ack policy) fetched up to
//             1,000 at a time every 100 ms, the last of each batch acknowledged;
//   passes    every 100 ms a consumer from where the last pass ended, read to the write that was
//             last when it was made, then deleted (the watcher as it is now, at ten times its
//             rate); no consumer while nothing was written.
// Per round: nats-server's CPU per create (/proc/<pid>/stat over the creates) and the creates'
// wall time; the watcher must see every write.
//
//   node bench/watcher_consumers.mjs [creates per round, default 8000] [rounds, default 3]
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(fileURLToPath(new URL('..', import.meta.url)));
const require = createRequire(join(root, 'tests/node/package.json'));
const { connect, consumerOpts, AckPolicy, DeliverPolicy } = require('nats');

const creates = Number(process.argv[2] ?? 8000);
const rounds = Number(process.argv[3] ?? 3);
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

const dir = mkdtempSync(join(tmpdir(), 'watcher-consumers-'));
const server = spawn('nats-server', ['-js', '-a', '127.0.0.1', '-p', '-1', '-sd', dir, '-ports_file_dir', dir],
                     { stdio: 'ignore' });
let port;
for (let i = 0; i < 100 && !port; ++i) {
  await sleep(50);
  try {
    port = JSON.parse(readFileSync(join(dir, `nats-server_${server.pid}.ports`), 'utf8')).nats[0].split(':').pop();
  } catch { /* not yet */ }
}
if (!port) throw new Error('nats-server did not start');
const serverCpuUs = () => {
  const fields = readFileSync(`/proc/${server.pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 1e6 / 100;  // utime + stime, 100 ticks a second
};

const writer = await connect({ servers: `127.0.0.1:${port}` });
const watch = await connect({ servers: `127.0.0.1:${port}` });
const jsm = await writer.jetstreamManager();
const kv = await writer.jetstream().views.kv('watched', { history: 1 });
const stream = 'KV_watched';
const value = new Uint8Array(1100).fill(65);
let written = 0;
const lastSeq = async () => (await jsm.streams.info(stream)).state.last_seq;

async function startWatcher(kind) {
  const wjs = watch.jetstream();
  const wjsm = await watch.jetstreamManager();
  let seen = 0;
  let stop = false;
  let next = (await lastSeq()) + 1;
  if (kind === 'push') {
    const opts = consumerOpts();
    opts.orderedConsumer();
    opts.startSequence(next);
    opts.headersOnly();
    const sub = await wjs.subscribe('$KV.watched.>', opts);
    (async () => { for await (const m of sub) ++seen; })();
    return { seen: () => seen, stop: async () => sub.unsubscribe() };
  }
  if (kind === 'pull') {
    const info = await wjsm.consumers.add(stream, {
      ack_policy: AckPolicy.All, deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: next, headers_only: true,
      inactive_threshold: 10e9, max_ack_pending: 20000 });
    const consumer = await wjs.consumers.get(stream, info.name);
    const loop = (async () => {
      while (!stop) {
        await sleep(100);
        for (;;) {
          let last = null, got = 0;
          for await (const m of await consumer.fetch({ max_messages: 1000, expires: 1000 })) { last = m; ++got; }
          if (last) last.ack();
          seen += got;
          if (got < 1000) break;
        }
      }
    })();
    return { seen: () => seen, stop: async () => { stop = true; await loop; await wjsm.consumers.delete(stream, info.name); } };
  }
  if (kind === 'passes') {
    const loop = (async () => {
      while (!stop) {
        await sleep(100);
        if ((await lastSeq()) < next) continue;  // nothing written: no consumer
        const inbox = `_INBOX.pass.${next}`;
        const sub = watch.subscribe(inbox);
        const info = await wjsm.consumers.add(stream, {
          ack_policy: AckPolicy.None, deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: next,
          headers_only: true, deliver_subject: inbox });
        let got = 0;
        for await (const m of sub) {
          ++got;
          next = Number(m.reply.split('.')[5]) + 1;  // $JS.ACK.<stream>.<consumer>.<n>.<stream seq>....
          if (got >= info.num_pending) break;
        }
        sub.unsubscribe();
        await wjsm.consumers.delete(stream, info.name);
        seen += got;
      }
    })();
    return { seen: () => seen, stop: async () => { stop = true; await loop; } };
  }
  return { seen: () => 0, stop: async () => {} };
}

console.log(`nats-server ${server.pid}, ${creates} creates per round, ${rounds} rounds`);
for (let round = 1; round <= rounds; ++round) {
  for (const kind of ['none', 'push', 'pull', 'passes']) {
    const watcher = await startWatcher(kind);
    await sleep(200);
    const cpu0 = serverCpuUs();
    const t0 = Date.now();
    for (let i = 0; i < creates; ++i) await kv.create(`k${written++}`, value);
    const cpu1 = serverCpuUs();
    const ms = Date.now() - t0;
    await sleep(1200);
    await watcher.stop();
    const seen = watcher.seen();
    console.log(`round ${round} ${kind.padEnd(6)}: ${((cpu1 - cpu0) / creates).toFixed(1)} µs of nats-server CPU per create, ` +
                `${ms} ms for the creates` + (kind === 'none' ? '' : `, the watcher saw ${seen}`) +
                (kind !== 'none' && seen !== creates ? ' (MISSED WRITES)' : ''));
  }
}
await writer.close();
await watch.close();
server.kill();
await new Promise((done) => server.once('exit', done));
rmSync(dir, { recursive: true, force: true });
