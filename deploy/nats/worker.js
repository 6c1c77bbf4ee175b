// A worker that is not changed for countersign: it subscribes jobs.> and answers requests.
// Used by the walkthrough in README.md:
//   NODE_PATH=tests/node/node_modules node deploy/nats/worker.js nats://worker:PASSWORD@127.0.0.1:4222
// (the `nats` npm package; scripts/setup.sh installs it under tests/node).
'use strict';
const { connect, StringCodec } = require('nats');

(async () => {
  const url = new URL(process.argv[2] || 'nats://127.0.0.1:4222');
  const options = { servers: `${url.hostname}:${url.port || 4222}` };
  if (url.username) options.user = decodeURIComponent(url.username);
  if (url.password) options.pass = decodeURIComponent(url.password);
  const nc = await connect(options);
  const sc = StringCodec();
  console.log('worker: listening on jobs.>');
  for await (const m of nc.subscribe('jobs.>')) {
    const decision = m.headers ? m.headers.get('Countersign-Decision') : '';
    const approval = m.headers ? m.headers.get('Countersign-Approval') : '';
    console.log(`worker: ${m.subject} (${decision || '-'}, approval ${approval || '-'}): ${sc.decode(m.data)}`);
    if (m.reply) m.respond(sc.encode(JSON.stringify({ done: m.subject })));
  }
})().catch((err) => {
  console.error(`worker: ${err.message}`);
  process.exit(1);
});
