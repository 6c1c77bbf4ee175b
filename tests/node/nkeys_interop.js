// Interoperability of countersign's nkey codec and Ed25519 signatures with nkeys.js, the NATS
// project's own implementation. Driven by tests/unit/nkeys_interop_test.cpp.
//
//   node nkeys_interop.js generate N   prints N lines {seed, public, message, signature} made by
//                                      nkeys.js (message and signature base64url)
//   node nkeys_interop.js check        reads such lines made by countersign on stdin and prints
//                                      one line per input: {public_matches, verifies, tampered}
'use strict';
const path = require('path');
const readline = require('readline');
const nkeys = require(path.join(__dirname, 'node_modules', 'nkeys.js'));

const b64url = (bytes) => Buffer.from(bytes).toString('base64url');
const fromB64url = (text) => new Uint8Array(Buffer.from(text, 'base64url'));

function generate(n) {
  for (let i = 0; i < n; i++) {
    const kp = nkeys.createUser();
    const message = new TextEncoder().encode(`{"i":${i},"text":"signed by nkeys.js \u20ac"}`);
    process.stdout.write(JSON.stringify({
      seed: new TextDecoder().decode(kp.getSeed()),
      public: kp.getPublicKey(),
      message: b64url(message),
      signature: b64url(kp.sign(message)),
    }) + '\n');
  }
}

async function check() {
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const item = JSON.parse(line);
    const message = fromB64url(item.message);
    const signature = fromB64url(item.signature);
    const fromSeed = nkeys.fromSeed(new TextEncoder().encode(item.seed));
    const verifier = nkeys.fromPublic(item.public);
    const tampered = Uint8Array.from(message);
    tampered[0] ^= 1;
    process.stdout.write(JSON.stringify({
      public_matches: fromSeed.getPublicKey() === item.public,
      verifies: verifier.verify(message, signature),
      tampered: verifier.verify(tampered, signature),
    }) + '\n');
  }
}

const mode = process.argv[2];
if (mode === 'generate') {
  generate(Number(process.argv[3] || 10));
} else if (mode === 'check') {
  check().catch((error) => { console.error(error); process.exit(2); });
} else {
  console.error('usage: nkeys_interop.js generate N | check');
  process.exit(2);
}
