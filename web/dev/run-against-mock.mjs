// Runs tests/browser/page.mjs (or weight.mjs) against the mock server, playing the
// harness's part: on READY_FOR_CUT it cuts link 0 through the mock's /__cut hook and
// tells the script so on stdin.
//
//   node web/dev/run-against-mock.mjs [page|weight]

import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const which = process.argv[2] || 'page';

const mock = spawn(process.execPath, [path.join(here, 'mock-server.mjs'), '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
const base = await new Promise((resolve, reject) => {
  mock.stdout.on('data', (d) => {
    const m = /listening on (\S+)/.exec(String(d));
    if (m) resolve(m[1]);
  });
  mock.on('exit', (c) => reject(new Error(`mock exited ${c}`)));
});

const child = spawn(process.execPath, [path.join(root, 'tests', 'browser', `${which}.mjs`)], {
  env: { ...process.env, BASE_URL: base, SHOT_DIR: process.env.SHOT_DIR || path.join(root, 'target', 'browser-shots') },
  stdio: ['pipe', 'pipe', 'inherit'],
});
let buf = '';
child.stdout.on('data', async (d) => {
  process.stdout.write(d);
  buf += String(d);
  if (buf.includes('READY_FOR_CUT')) {
    buf = '';
    await fetch(`${base}/__cut?link=0`, { method: 'POST' });
    child.stdin.write('\n');
  }
});
const code = await new Promise((r) => child.on('exit', r));
mock.kill();
process.exit(code ?? 1);
