// The worker-side receipt check of docs/receipts.md, as a worker in Node would write it (the
// function below is the documented one). Run by tests/integration/receipt_test.cpp:
//   node receipt_check.js <trusted key>  < {"subject", "headers": [[name, value]...], "payload_b64"}
// prints {"ok": ..., "problem"?: ..., "receipt"?: {...}}.
'use strict';
const crypto = require('crypto');
const nkeys = require(require('path').join(__dirname, 'node_modules', 'nkeys.js'));

// RFC 8785 for what JSON.parse returns (numbers already print the ES6 way).
function canonical(v) {
  if (Array.isArray(v)) return '[' + v.map(canonical).join(',') + ']';
  if (v !== null && typeof v === 'object') {
    // Sort by UTF-16 code units: JavaScript's default string order.
    return '{' + Object.keys(v).sort().map((k) => JSON.stringify(k) + ':' + canonical(v[k])).join(',') + '}';
  }
  return JSON.stringify(v);
}

// headers: [[name, value], ...] in wire order; payload: Buffer; subject: arrival subject.
function checkReceipt(trustedKey, subject, headers, payload) {
  const value = (headers.find(([n]) => n.toLowerCase() === 'countersign-receipt') || [])[1];
  if (!value || value.split('.').length !== 2) return { ok: false, problem: 'no receipt' };
  const [jsonPart, sigPart] = value.split('.');
  const json = Buffer.from(jsonPart, 'base64url');
  const sig = Buffer.from(sigPart, 'base64url');
  if (!nkeys.fromPublic(trustedKey).verify(json, sig)) return { ok: false, problem: 'bad signature' };
  const r = JSON.parse(json.toString('utf8'));
  if (r.target !== subject) return { ok: false, problem: 'other subject' };
  const kept = {};
  for (const [n, v] of headers) {
    const l = n.toLowerCase();
    if (l.startsWith('nats-') || l.startsWith('countersign-')) continue;
    (kept[n] = kept[n] || []).push(v);
  }
  const doc = { subject: r.subject, target: subject, headers: kept };
  let parsed;
  try { parsed = payload.length ? JSON.parse(payload.toString('utf8')) : undefined; } catch { parsed = undefined; }
  if (parsed !== undefined) doc.payload_json = parsed; else doc.payload_b64 = payload.toString('base64');
  const hash = 'sha256:' + crypto.createHash('sha256').update(canonical(doc)).digest('hex');
  if (hash !== r.job_hash) return { ok: false, problem: 'job changed' };
  const msgId = (headers.find(([n]) => n.toLowerCase() === 'nats-msg-id') || [])[1] || '';
  if (msgId !== r.msg_id) return { ok: false, problem: 'other msg id' };
  return { ok: true, receipt: r };
}

let input = '';
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  const m = JSON.parse(input);
  const result = checkReceipt(process.argv[2], m.subject, m.headers, Buffer.from(m.payload_b64, 'base64'));
  process.stdout.write(JSON.stringify(result) + '\n');
});
