// An operator-mode NATS setup, made the way `nsc` makes one, for tests of `.creds` files:
//   node operator_creds.js <dir>
// writes <dir>/server.conf (operator JWT, system account, MEMORY resolver preloaded with the
// accounts APP and SYS; JetStream allowed in APP), <dir>/user.creds (a user of APP: its JWT and
// seed, in the format `nsc generate creds` writes) and <dir>/stranger.creds (a user signed by an
// account the server does not know).
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const nkeys = require(path.join(__dirname, 'node_modules', 'nkeys.js'));

const b64url = (bytes) => Buffer.from(bytes).toString('base64url');

// A NATS JWT (v2): header, claims, Ed25519 signature of "header.claims" by the issuer's key.
function encode(claims, issuer) {
  claims.iat = Math.floor(Date.now() / 1000);
  claims.iss = issuer.getPublicKey();
  claims.jti = crypto.createHash('sha256').update(JSON.stringify(claims)).digest('hex').toUpperCase();
  const signed = b64url(JSON.stringify({ typ: 'JWT', alg: 'ed25519-nkey' })) + '.' + b64url(JSON.stringify(claims));
  return signed + '.' + b64url(issuer.sign(Buffer.from(signed)));
}

function account(operator, name, jetstream) {
  const key = nkeys.createAccount();
  const limits = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 };
  if (jetstream) Object.assign(limits, { mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 });
  const jwt = encode({ name, sub: key.getPublicKey(),
                       nats: { limits, default_permissions: { pub: {}, sub: {} }, type: 'account', version: 2 } },
                     operator);
  return { key, jwt };
}

function creds(accountKey, name) {
  const user = nkeys.createUser();
  const jwt = encode({ name, sub: user.getPublicKey(),
                       nats: { pub: {}, sub: {}, subs: -1, data: -1, payload: -1, type: 'user', version: 2 } },
                     accountKey);
  return '-----BEGIN NATS USER JWT-----\n' + jwt + '\n------END NATS USER JWT------\n\n' +
         '************************* IMPORTANT *************************\n' +
         'NKEY Seed printed below can be used to sign and prove identity.\n' +
         'NKEYs are sensitive and should be treated as secrets.\n\n' +
         '-----BEGIN USER NKEY SEED-----\n' + Buffer.from(user.getSeed()).toString() +
         '\n------END USER NKEY SEED------\n\n*************************************************************\n';
}

const dir = process.argv[2];
const operator = nkeys.createOperator();
const sys = account(operator, 'SYS', false);
const app = account(operator, 'APP', true);
const operatorJwt = encode({ name: 'test-operator', sub: operator.getPublicKey(),
                             nats: { system_account: sys.key.getPublicKey(), type: 'operator', version: 2 } },
                           operator);
fs.writeFileSync(path.join(dir, 'server.conf'),
                 'operator: "' + operatorJwt + '"\n' +
                 'system_account: ' + sys.key.getPublicKey() + '\n' +
                 'resolver: MEMORY\n' +
                 'resolver_preload: {\n' +
                 '  ' + sys.key.getPublicKey() + ': "' + sys.jwt + '"\n' +
                 '  ' + app.key.getPublicKey() + ': "' + app.jwt + '"\n' +
                 '}\n');
fs.writeFileSync(path.join(dir, 'user.creds'), creds(app.key, 'countersign'), { mode: 0o600 });
fs.writeFileSync(path.join(dir, 'stranger.creds'), creds(nkeys.createAccount(), 'stranger'), { mode: 0o600 });
