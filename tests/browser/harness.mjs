// Shared by the browser test and the console benchmark: a real nats-server (random port, own
// store dir) and the real countersign binary with the console's tokens, plus the Node packages
// of tests/node (playwright-core, nats).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(new URL('../node/package.json', import.meta.url));
export const { chromium } = require('playwright-core');
export const nats = require('nats');

export const ALICE = 'alice-console-token-7f3a91';
export const RITA = 'rita-read-token-19c2b4';
export const BOB = 'bob-approve-token-5d7e20';
export const CAROL = 'carol-approve-token-8e41c6';  // may approve, but is no approver of the wires

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function policy(threshold) {
  return `version: v1
rules:
  - id: allow-readonly
    when: { topic: knowledge.read }
    decision: allow
  - id: petty-cash-quickly
    when: { topic: "finance.petty.>" }
    decision: require_human
    timeout: 5s
  - id: two-person-wires
    when: { topic: "finance.wire.>" }
    decision: require_human
    approvers: [alice, bob]
    quorum: 2
    timeout: 30m
  - id: hold-large-payments
    when: { topic: "finance.>", env: production, payload.amount: { gt: ${threshold} } }
    decision: require_human
    timeout: 30m
`;
}

// Starts a process in `dir` and resolves with the first match of `pattern` in its output.
function start(children, dir, bin, args, pattern) {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let output = '';
    const timer = setTimeout(() => reject(new Error(bin + ' did not start:\n' + output)), 20000);
    const onData = (data) => {
      output += data;
      const match = output.match(pattern);
      if (match) {
        clearTimeout(timer);
        resolve({ child, match, output: () => output });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(bin + ' exited with ' + code + ':\n' + output)));
  });
}

// nats-server and `countersign run` with the people alice, bob, rita and carol, tokens alice,
// bob and carol (approve) and rita (read), the policy of
// policy(100) in dir/policy.yaml (rewrite it and send SIGHUP to `gateway` to change it).
export async function startStack(countersignBin, natsServerBin) {
  const dir = mkdtempSync(join(tmpdir(), 'countersign-browser-'));
  const children = [];
  const stop = async () => {
    for (const child of children) child.kill('SIGTERM');
    await sleep(300);
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const server = await start(children, dir, natsServerBin, ['-a', '127.0.0.1', '-p', '-1', '-js', '-sd', join(dir, 'js')],
      /Listening for client connections on [^\s]*:(\d+)/);
    const natsUrl = 'nats://127.0.0.1:' + server.match[1];
    writeFileSync(join(dir, 'policy.yaml'), policy(100));
    const config = `nats:
  servers: ["${natsUrl}"]
policy:
  file: policy.yaml
routes:
  - { name: jobs, from: "agents.jobs.>", to: "jobs.>" }
events:
  redact: [card.number, iban]
approvers:
  people:
    - { name: alice }
    - { name: bob }
    - { name: rita }
    - { name: carol }
admin:
  listen: "127.0.0.1:0"
  tokens:
    - { approver: alice, token: ${ALICE}, scope: approve }
    - { approver: bob, token: ${BOB}, scope: approve }
    - { approver: rita, token: ${RITA}, scope: read }
    - { approver: carol, token: ${CAROL}, scope: approve }
`;
    writeFileSync(join(dir, 'countersign.yaml'), config);
    const runArgs = ['run', '--config', join(dir, 'countersign.yaml')];
    const gateway = await start(children, dir, countersignBin, runArgs, /admin http:\/\/127\.0\.0\.1:(\d+)/);
    const port = gateway.match[1];
    const stack = { dir, natsUrl, origin: 'http://127.0.0.1:' + port, gateway: gateway.child, gatewayLog: gateway.output, stop };
    // Stops countersign (SIGTERM) and starts it again on the same admin port: a page keeps its
    // origin and sees its event stream break. The bucket and the streams stay.
    stack.restartGateway = async () => {
      const old = stack.gateway;
      if (old.exitCode === null) {
        const exited = new Promise((done) => old.once('exit', done));
        old.kill('SIGTERM');
        await exited;
      }
      writeFileSync(join(dir, 'countersign.yaml'), config.replace('listen: "127.0.0.1:0"', `listen: "127.0.0.1:${port}"`));
      const again = await start(children, dir, countersignBin, runArgs, new RegExp(`admin http://127\\.0\\.0\\.1:${port}`));
      stack.gateway = again.child;
      const before = stack.gatewayLog;
      stack.gatewayLog = () => before() + again.output();
    };
    return stack;
  } catch (error) {
    await stop();
    throw error;
  }
}

// Runs `body(stack)` against a fresh stack, stops it, and exits (1 when body threw).
export async function runWithStack(countersignBin, natsServerBin, body) {
  const stack = await startStack(countersignBin, natsServerBin);
  let exitCode = 0;
  try {
    await body(stack);
  } catch (error) {
    console.error(error.stack || String(error));
    exitCode = 1;
  } finally {
    await stack.stop();
  }
  process.exit(exitCode);
}
