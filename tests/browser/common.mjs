// Shared by the browser scripts: playwright-core from web/node_modules driving the
// system's Chromium (Debian's /usr/bin/chromium; no browser download).

import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const require = createRequire(new URL('../../web/package.json', import.meta.url));

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

// Without the background-networking flags Chromium's own connections (component
// updates, sync) get refused on the test machines and disturb the page's.
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** A fresh browser context (own temp profile); `close()` removes the profile too. */
export async function launch(viewport = { width: 390, height: 844 }) {
  let chromium;
  try {
    ({ chromium } = require('playwright-core'));
  } catch {
    throw new Error('playwright-core missing: run `make web-deps` (npm ci in web/)');
  }
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} missing: run \`make deps\` (Debian package chromium)`);
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'braid-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport,
    timeout: 30000,
  });
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}

export function baseUrl() {
  const b = process.env.BASE_URL;
  if (!b) throw new Error('BASE_URL is not set (e.g. BASE_URL=http://127.0.0.1:8080)');
  return b.replace(/\/+$/, '');
}
