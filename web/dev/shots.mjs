// Screenshots of every screen against a running mock (viewport-sized, to look at
// the layout as a phone shows it): BASE_URL=... node web/dev/shots.mjs [OUT_DIR]

import path from 'node:path';
import fs from 'node:fs';
import { launch, baseUrl } from '../../tests/browser/common.mjs';

const BASE = baseUrl();
const OUT = process.argv[2] || path.resolve('target/browser-shots/dev');
fs.mkdirSync(OUT, { recursive: true });
const PW = 'dev-password-1';

const b = await launch({ width: 390, height: 844 });
const page = b.context.pages()[0] || (await b.context.newPage());
const shot = (name) => page.screenshot({ path: path.join(OUT, `${name}.png`) });
page.on('pageerror', (e) => console.error('pageerror', e));
page.on('console', (m) => m.type() === 'error' && console.error('console', m.text()));

await page.goto(`${BASE}/`);
await page.locator('form.auth').waitFor();
await shot('01-first-visit');
if (await page.locator('#setup-pw').count()) {
  await page.fill('#setup-pw', PW);
  await page.fill('#setup-pw2', 'different-1');
  await page.click('form.auth button[type=submit]');
  await shot('02-setup-mismatch');
  await page.fill('#setup-pw2', PW);
  await page.click('form.auth button[type=submit]');
} else {
  await page.fill('#login-pw', PW);
  await page.click('form.auth button[type=submit]');
}
await page.locator('.view-dashboard .link').first().waitFor();
await page.waitForTimeout(3000);
await shot('03-dashboard');
await page.click('#nav a[data-tab="settings"]');
await page.locator('#save-settings').waitFor();
await shot('04-settings-top');
await page.fill('[data-key="relay.latency_ms"]', '20');
await page.fill('[data-key="video.fps"]', '25');
await page.click('#save-settings');
await page.locator('[aria-invalid="true"]').first().waitFor();
await shot('05-settings-error');
await page.fill('[data-key="relay.latency_ms"]', '900');
await page.click('#save-settings');
await page.locator('#restart-stream').waitFor();
await page.evaluate(() => window.scrollTo(0, 0));
await shot('06-settings-restart-banner');
await page.click('#nav a[data-tab="actions"]');
await page.click('#load-logs');
await page.locator('pre.logs').waitFor();
await shot('07-actions');
await page.click('#reboot');
await page.locator('dialog[open]').waitFor();
await shot('08-reboot-confirm');
await page.click('dialog[open] button:has-text("Cancel")');
await fetch(`${BASE}/__sse?on=0`, { method: 'POST' });
await page.click('#nav a[data-tab="dashboard"]');
await page.waitForTimeout(3000);
await shot('09-dashboard-polling');
await page.setViewportSize({ width: 1366, height: 768 });
await page.click('#nav a[data-tab="settings"]');
await page.locator('#save-settings').waitFor();
await shot('10-settings-wide');
await page.click('#nav a[data-tab="actions"]');
await shot('11-actions-wide');
await b.close();
console.log(`screenshots in ${OUT}`);
