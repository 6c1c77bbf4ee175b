// A fake Slack for the bridge's tests: the Web API methods the bridge calls, over HTTPS with a
// CA made for the test, and the Socket Mode WebSocket over WSS; plus a plain-HTTP control API on
// loopback through which a test reads every recorded call, makes Slack fail, and plays clicks.
//
//   node fake_slack.js DIR    writes DIR/ca.pem (the CA to trust) and DIR/ports.json
//                             {"api": <https port>, "control": <http port>}, then serves until
//                             SIGTERM. Only Node's own modules and the openssl CLI.
//
// Web API (https://127.0.0.1:<api>/api/<method>): auth.test, chat.postMessage, chat.update,
// chat.postEphemeral, views.open (needs a trigger_id and a view; bot token FAKE_SLACK_BOT_TOKEN, default xoxb-fake) and
// apps.connections.open (app token FAKE_SLACK_APP_TOKEN, default xapp-fake). A wrong token
// answers {"ok":false,"error":"invalid_auth"}, none "not_authed".
//
// Control API (http://127.0.0.1:<control>):
//   GET  /calls                 every Web API call: [{method, auth_ok, body, at_ms, at_us}] (at_us:
//                               wall-clock microseconds when the request was complete)
//   GET  /connections           {tls: TLS connections accepted by the Web API so far}
//   POST /keepalive             {enabled}: false answers every Web API call with Connection: close
//   POST /fail                  {method, error?, status?, retry_after?, times}: the next `times`
//                               calls of `method` fail so (status 429 + Retry-After, or 200 with
//                               {"ok":false,"error":error})
//   GET  /socket                {connected, hellos, opened, acks: [envelope ids], received: [...]}
//   POST /socket/send           {payload, envelope_id?}: an `interactive` envelope to every socket;
//                               answers {envelope_id, sent, sent_at_us}
//   POST /socket/disconnect     {"type":"disconnect"} to every socket
//   POST /socket/drop           destroys every socket without a close frame
//   POST /hook                  a webhook receiver: records {timestamp, signature, body}; answers
//                               503 while POST /hook/fail {times} has failures left, else 204;
//                               POST /hook/slow {ms} delays every answer by ms
//   GET  /hooks                 what /hook received
//   POST /view/submission       {user, reason?}: the view_submission payload Slack would send when
//                               `user` submits the dialog of the last views.open call, with
//                               `reason` typed in its plain_text_input (play it with
//                               /socket/send or /http/click); 422 when the input is required
//                               (not `optional`) and `reason` is empty, as Slack refuses to submit
//   POST /http/click            {url, payload, secret, signature: right|wrong|stale|none,
//                               body_bytes?}: a signed interactivity post to the bridge;
//                               answers {status, body}
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const https = require('https');
const path = require('path');
const { execFileSync } = require('child_process');

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node fake_slack.js DIR');
  process.exit(2);
}
const BOT = process.env.FAKE_SLACK_BOT_TOKEN || 'xoxb-fake';
const APP = process.env.FAKE_SLACK_APP_TOKEN || 'xapp-fake';

function makeCertificates() {
  const run = (args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  run(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2',
       '-subj', '/CN=countersign test CA']);
  run(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1']);
  fs.writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  run(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out',
       'server.pem', '-days', '2', '-extfile', 'san.ext']);
}

const calls = [];
const hooks = [];
let hookFailures = 0;
let hookDelayMs = 0;
let keepAlive = true;
let tlsConnections = 0;
// Wall-clock time in microseconds, finer than Date.now(), comparable across processes.
const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);
const failures = [];  // {method, error, status, retry_after, times}
let tsCounter = 0;
const sockets = new Set();
const socketState = { hellos: 0, opened: 0, acks: [], received: [] };

function nextTs() {
  tsCounter += 1;
  return `1700000000.${String(tsCounter).padStart(6, '0')}`;
}

function readBody(req, limit = 64 * 1024 * 1024) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > limit) { reject(new Error('too large')); req.destroy(); return; }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function json(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  if (!keepAlive) headers = { connection: 'close', ...headers };
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8',
                          'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function takeFailure(method) {
  const f = failures.find((x) => x.method === method && x.times > 0);
  if (!f) return null;
  f.times -= 1;
  return f;
}

async function webApi(req, res, apiPort) {
  const method = req.url.replace(/^\/api\//, '').split('?')[0];
  const raw = await readBody(req);
  let body = null;
  try { body = raw.length ? JSON.parse(raw.toString('utf8')) : {}; } catch { body = { _raw: raw.toString('utf8') }; }
  const auth = req.headers.authorization || '';
  const want = method === 'apps.connections.open' ? APP : BOT;
  const authOk = auth === `Bearer ${want}`;
  calls.push({ method, auth_ok: authOk, body, at_ms: Date.now(), at_us: nowUs() });
  if (!auth) return json(res, 200, { ok: false, error: 'not_authed' });
  if (!authOk) return json(res, 200, { ok: false, error: 'invalid_auth' });
  const f = takeFailure(method);
  if (f) {
    const headers = f.retry_after !== undefined ? { 'retry-after': String(f.retry_after) } : {};
    if (f.status && f.status !== 200) return json(res, f.status, { ok: false, error: f.error || 'ratelimited' }, headers);
    return json(res, 200, { ok: false, error: f.error || 'ratelimited' }, headers);
  }
  switch (method) {
    case 'auth.test': return json(res, 200, { ok: true, user_id: 'UBOT', team_id: 'T1', bot_id: 'B1' });
    case 'chat.postMessage': return json(res, 200, { ok: true, channel: body.channel, ts: nextTs() });
    case 'chat.update': return json(res, 200, { ok: true, channel: body.channel, ts: body.ts });
    case 'chat.postEphemeral': return json(res, 200, { ok: true, message_ts: nextTs() });
    case 'views.open':
      if (!body.trigger_id || !body.view) return json(res, 200, { ok: false, error: 'invalid_arguments' });
      return json(res, 200, { ok: true, view: { id: `V${calls.length}`, ...body.view } });
    case 'apps.connections.open':
      return json(res, 200, { ok: true, url: `wss://127.0.0.1:${apiPort}/link/?ticket=${crypto.randomUUID()}` });
    default: return json(res, 200, { ok: false, error: 'unknown_method' });
  }
}

// --- WebSocket (RFC 6455), the server side of what Socket Mode needs --------------------------
function frame(opcode, payload) {
  const data = Buffer.from(payload);
  let header;
  if (data.length < 126) {
    header = Buffer.from([0x80 | opcode, data.length]);
  } else if (data.length < 65536) {
    header = Buffer.alloc(4);
    header[0] = 0x80 | opcode; header[1] = 126; header.writeUInt16BE(data.length, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = 0x80 | opcode; header[1] = 127; header.writeBigUInt64BE(BigInt(data.length), 2);
  }
  return Buffer.concat([header, data]);
}

function send(socket, object) {
  if (!socket.destroyed) socket.write(frame(1, JSON.stringify(object)));
}

function onUpgrade(req, socket) {
  const key = req.headers['sec-websocket-key'];
  if (!req.url.startsWith('/link') || !key) { socket.destroy(); return; }
  const accept = crypto.createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
               `Sec-WebSocket-Accept: ${accept}\r\n\r\n`);
  sockets.add(socket);
  socketState.opened += 1;
  let buffer = Buffer.alloc(0);
  socket.on('data', (chunk) => {
    buffer = Buffer.concat([buffer, chunk]);
    while (buffer.length >= 2) {
      const opcode = buffer[0] & 0x0f;
      const masked = (buffer[1] & 0x80) !== 0;
      let length = buffer[1] & 0x7f;
      let offset = 2;
      if (length === 126) { if (buffer.length < 4) return; length = buffer.readUInt16BE(2); offset = 4; }
      else if (length === 127) { if (buffer.length < 10) return; length = Number(buffer.readBigUInt64BE(2)); offset = 10; }
      const maskLength = masked ? 4 : 0;
      if (buffer.length < offset + maskLength + length) return;
      const mask = masked ? buffer.subarray(offset, offset + 4) : null;
      const payload = Buffer.from(buffer.subarray(offset + maskLength, offset + maskLength + length));
      if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
      buffer = buffer.subarray(offset + maskLength + length);
      if (opcode === 1) {
        const text = payload.toString('utf8');
        socketState.received.push(text);
        try {
          const message = JSON.parse(text);
          if (message.envelope_id) socketState.acks.push(message.envelope_id);
        } catch { /* recorded as received */ }
      } else if (opcode === 8) {
        socket.end(frame(8, payload.subarray(0, 2)));
        sockets.delete(socket);
      } else if (opcode === 9) {
        socket.write(frame(10, payload));
      }
    }
  });
  socket.on('close', () => sockets.delete(socket));
  socket.on('error', () => sockets.delete(socket));
  socketState.hellos += 1;
  send(socket, { type: 'hello', num_connections: sockets.size, connection_info: { app_id: 'A1' } });
}

// --- Signed HTTP clicks, as Slack sends them -------------------------------------------------
function httpClick(spec) {
  const form = spec.body_bytes
    ? 'payload=' + 'x'.repeat(spec.body_bytes)
    : 'payload=' + encodeURIComponent(typeof spec.payload === 'string' ? spec.payload : JSON.stringify(spec.payload));
  let ts = Math.floor(Date.now() / 1000);
  if (spec.signature === 'stale') ts -= 600;
  const sign = (secret) => 'v0=' + crypto.createHmac('sha256', secret).update(`v0:${ts}:${form}`).digest('hex');
  const headers = { 'content-type': 'application/x-www-form-urlencoded', 'x-slack-request-timestamp': String(ts) };
  if (spec.signature !== 'none') headers['x-slack-signature'] = sign(spec.signature === 'wrong' ? 'not-the-secret' : spec.secret);
  const url = new URL(spec.url);
  return new Promise((resolve) => {
    const req = http.request({ host: url.hostname, port: url.port, path: url.pathname, method: 'POST', headers }, (res) => {
      readBody(res).then((b) => resolve({ status: res.statusCode, body: b.toString('utf8') }), () => resolve({ status: res.statusCode, body: '' }));
    });
    req.on('error', (e) => resolve({ status: 0, body: String(e.message) }));
    req.end(form);
  });
}

async function control(req, res) {
  const raw = req.method === 'POST' ? await readBody(req) : Buffer.alloc(0);
  if (req.method === 'POST' && req.url === '/hook') {
    hooks.push({ timestamp: req.headers['x-countersign-timestamp'] || '', signature: req.headers['x-countersign-signature'] || '',
                 body: raw.toString('utf8'), failed: hookFailures > 0, at_ms: Date.now() });
    if (hookDelayMs > 0) await new Promise((r) => setTimeout(r, hookDelayMs));
    if (hookFailures > 0) { hookFailures -= 1; return json(res, 503, { error: 'try later' }); }
    res.writeHead(204); return res.end();
  }
  if (req.method === 'GET' && req.url === '/hooks') return json(res, 200, hooks);
  const body = raw.length ? JSON.parse(raw.toString('utf8')) : {};
  if (req.method === 'GET' && req.url === '/calls') return json(res, 200, calls);
  if (req.method === 'GET' && req.url === '/socket') return json(res, 200, { connected: sockets.size, ...socketState });
  if (req.method === 'GET' && req.url === '/connections') return json(res, 200, { tls: tlsConnections });
  if (req.method === 'POST' && req.url === '/keepalive') {
    keepAlive = body.enabled !== false;
    return json(res, 200, { ok: true });
  }
  if (req.method === 'POST' && req.url === '/hook/slow') {
    hookDelayMs = body.ms || 0;
    return json(res, 200, { ok: true });
  }
  if (req.method === 'POST' && req.url === '/hook/fail') {
    hookFailures = body.times ?? 1;
    return json(res, 200, { ok: true });
  }
  if (req.method === 'POST' && req.url === '/fail') {
    failures.push({ times: 1, ...body });
    return json(res, 200, { ok: true });
  }
  if (req.method === 'POST' && req.url === '/socket/send') {
    const envelopeId = body.envelope_id || crypto.randomUUID();
    const sentAt = nowUs();
    for (const s of sockets) {
      send(s, { envelope_id: envelopeId, type: 'interactive', accepts_response_payload: false, payload: body.payload });
    }
    return json(res, 200, { envelope_id: envelopeId, sent: sockets.size, sent_at_us: sentAt });
  }
  if (req.method === 'POST' && req.url === '/socket/disconnect') {
    for (const s of sockets) send(s, { type: 'disconnect', reason: 'refresh_requested' });
    return json(res, 200, { sent: sockets.size });
  }
  if (req.method === 'POST' && req.url === '/socket/drop') {
    const n = sockets.size;
    for (const s of sockets) s.destroy();
    sockets.clear();
    return json(res, 200, { dropped: n });
  }
  if (req.method === 'POST' && req.url === '/http/click') return json(res, 200, await httpClick(body));
  if (req.method === 'POST' && req.url === '/view/submission') {
    const opened = calls.filter((c) => c.method === 'views.open').pop();
    if (!opened) return json(res, 409, { error: 'no views.open call yet' });
    const view = opened.body.view;
    const values = {};
    for (const block of view.blocks || []) {
      if (block.type !== 'input') continue;
      // Slack does not let a dialog be submitted with a required input left empty.
      if (!block.optional && !body.reason) return json(res, 422, { error: 'required input empty' });
      values[block.block_id] = { [block.element.action_id]: { type: block.element.type, value: body.reason ?? null } };
    }
    return json(res, 200, {
      type: 'view_submission', team: { id: 'T1' }, user: { id: body.user, username: 'someone', team_id: 'T1' },
      trigger_id: `${Date.now()}.trigger`,
      view: { id: `V${calls.indexOf(opened)}`, type: 'modal', callback_id: view.callback_id,
              private_metadata: view.private_metadata, state: { values } },
    });
  }
  return json(res, 404, { error: 'no such control' });
}

function main() {
  makeCertificates();
  const api = https.createServer({ key: fs.readFileSync(path.join(dir, 'server.key')),
                                   cert: fs.readFileSync(path.join(dir, 'server.pem')) });
  api.on('request', (req, res) => {
    webApi(req, res, api.address().port).catch((e) => json(res, 500, { ok: false, error: String(e.message) }));
  });
  api.on('upgrade', onUpgrade);
  api.on('secureConnection', () => { tlsConnections += 1; });
  const ctl = http.createServer((req, res) => {
    control(req, res).catch((e) => json(res, 500, { error: String(e.message) }));
  });
  api.listen(0, '127.0.0.1', () => {
    ctl.listen(0, '127.0.0.1', () => {
      const ports = { api: api.address().port, control: ctl.address().port };
      fs.writeFileSync(path.join(dir, 'ports.json.tmp'), JSON.stringify(ports));
      fs.renameSync(path.join(dir, 'ports.json.tmp'), path.join(dir, 'ports.json'));
    });
  });
  const stop = () => { for (const s of sockets) s.destroy(); api.close(); ctl.close(); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
