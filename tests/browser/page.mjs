// The page as an engineer on site uses it, in headless Chromium:
//   1. first visit: set the admin password (twice)
//   2. log out            3. log in
//   4. dashboard figures move (uptime or a link's throughput changes between two reads)
//   5. link.0.data_cap_mb changed in the settings form, saved, seen in the dashboard's
//      link card and, after a reload, in the form
//   6. screenshots of dashboard and settings at 390x844 and 1366x768 into SHOT_DIR
//   7. (with UPDATE_FILE) a signed update bundle uploaded from the Actions tab and
//      reported installed
//   8. link cut: prints READY_FOR_CUT, waits for one line on stdin (the harness cuts a
//      link, then writes the link's name, or an empty line for the first link), then
//      times how long the page takes to show that link down (must be under 2 s)
// Prints one JSON line of results last; exits 1 on any failure.
//
// Environment: BASE_URL (required), SHOT_DIR (default target/browser-shots),
// PASSWORD (default a fixed test password), CUT_DEADLINE_MS (default 2000),
// SKIP_CUT=1 (no step 7), CHROMIUM (default /usr/bin/chromium).

import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { launch, baseUrl } from './common.mjs';

const BASE = baseUrl();
const SHOT_DIR = process.env.SHOT_DIR || path.resolve('target/browser-shots');
const PASSWORD = process.env.PASSWORD || 'braid-test-pass-1';
const CUT_DEADLINE_MS = Number(process.env.CUT_DEADLINE_MS || 2000);
const STEP_TIMEOUT = 10000;

const results = { ok: false, base_url: BASE, steps: {}, screenshots: [], console_errors: [], resource_errors: [], external_requests: [] };

function log(msg) {
  process.stderr.write(`page: ${msg}\n`);
}

async function step(name, fn) {
  const t0 = Date.now();
  log(`${name}…`);
  const detail = await fn();
  results.steps[name] = { ok: true, ms: Date.now() - t0, ...(detail || {}) };
}

let stdinLines = null;
function nextStdinLine() {
  if (!stdinLines) {
    const rl = readline.createInterface({ input: process.stdin });
    const queue = [];
    const waiters = [];
    let closed = false;
    rl.on('line', (l) => (waiters.length ? waiters.shift().resolve(l) : queue.push(l)));
    rl.on('close', () => {
      closed = true;
      while (waiters.length) waiters.shift().reject(new Error('stdin closed before the cut signal'));
    });
    stdinLines = () =>
      new Promise((resolve, reject) => {
        if (queue.length) resolve(queue.shift());
        else if (closed) reject(new Error('stdin closed before the cut signal'));
        else waiters.push({ resolve, reject });
      });
  }
  return stdinLines();
}

async function dashboardFigures(page) {
  return page.evaluate(() => {
    const up = document.querySelector('[data-k="uptime"]')?.textContent ?? '';
    const bps = [...document.querySelectorAll('.link [data-k="bps"]')].map((e) => e.textContent);
    return { uptime: up, bps };
  });
}

async function main() {
  fs.mkdirSync(SHOT_DIR, { recursive: true });
  const browser = await launch({ width: 390, height: 844 });
  const origin = new URL(BASE).origin;
  try {
    const page = browser.context.pages()[0] || (await browser.context.newPage());
    page.setDefaultTimeout(STEP_TIMEOUT);
    page.on('console', (m) => {
      if (m.type() !== 'error') return;
      // A failed request is reported by the step that needed it; noted, not fatal.
      if (m.text().startsWith('Failed to load resource')) results.resource_errors.push(m.text());
      else results.console_errors.push(m.text());
    });
    page.on('pageerror', (e) => results.console_errors.push(String(e)));
    page.on('request', (r) => {
      const u = r.url();
      if (!u.startsWith(origin) && !u.startsWith('data:')) results.external_requests.push(u);
    });

    await step('setup', async () => {
      await page.goto(`${BASE}/`);
      await page.locator('#setup-pw').waitFor();
      await page.fill('#setup-pw', PASSWORD);
      await page.fill('#setup-pw2', PASSWORD);
      await page.click('form.auth button[type=submit]');
      await page.locator('.view-dashboard').waitFor();
    });

    await step('logout', async () => {
      await page.click('#logout');
      await page.locator('#login-pw').waitFor();
    });

    await step('login', async () => {
      await page.fill('#login-pw', PASSWORD);
      await page.click('form.auth button[type=submit]');
      await page.locator('.view-dashboard .link').first().waitFor();
    });

    await step('dashboard_moves', async () => {
      await page.waitForFunction(() => /\d/.test(document.querySelector('[data-k="uptime"]')?.textContent ?? ''));
      const a = await dashboardFigures(page);
      await page.waitForTimeout(2500);
      const b = await dashboardFigures(page);
      const moved = a.uptime !== b.uptime || a.bps.some((v, i) => v !== b.bps[i]);
      if (!moved) throw new Error(`dashboard did not change in 2.5 s: ${JSON.stringify(a)}`);
      return { before: a, after: b };
    });

    let linkName = null;
    await step('setting_applied', async () => {
      linkName = await page.locator('.view-dashboard .link').first().getAttribute('data-link');
      await page.click('#nav a[data-tab="settings"]');
      const input = page.locator('[data-key="link.0.data_cap_mb"]');
      await input.waitFor();
      const old = Number((await input.inputValue()) || 0);
      const want = old === 4321 ? 4322 : 4321;
      await input.fill(String(want));
      const saved = page.waitForResponse((r) => r.url().endsWith('/api/settings') && r.request().method() === 'PUT');
      await page.click('#save-settings');
      const res = await saved;
      if (res.status() !== 200) throw new Error(`PUT /api/settings answered ${res.status()}: ${await res.text()}`);
      const body = await res.json();
      // A cap that waits for a stream restart: press the banner's button, as a user would.
      let restarted = false;
      if (await page.locator('#restart-stream').isVisible()) {
        const rr = page.waitForResponse((r) => r.url().endsWith('/api/stream/restart'));
        await page.click('#restart-stream');
        if ((await rr).status() !== 200) throw new Error('stream restart failed');
        restarted = true;
      }
      await page.click('#nav a[data-tab="dashboard"]');
      const t0 = Date.now();
      await page
        .locator(`.link[data-link="${linkName}"] [data-k="cap"][data-cap-mb="${want}"]`)
        .waitFor({ timeout: 15000 });
      const seenMs = Date.now() - t0;
      await page.reload();
      await page.click('#nav a[data-tab="settings"]');
      await input.waitFor();
      const after = await input.inputValue();
      if (Number(after) !== want) throw new Error(`after reload the form shows ${after}, not ${want}`);
      return { cap_mb: want, applied: body.applied, restart_needed: body.restart_needed, restarted, dashboard_ms: seenMs };
    });

    await step('screenshots', async () => {
      for (const [w, hgt] of [
        [390, 844],
        [1366, 768],
      ]) {
        await page.setViewportSize({ width: w, height: hgt });
        for (const tab of ['dashboard', 'settings']) {
          await page.click(`#nav a[data-tab="${tab}"]`);
          if (tab === 'dashboard') {
            await page.locator('.view-dashboard .link').first().waitFor();
            await page.waitForTimeout(2500); // a few points in the charts
          } else {
            await page.locator('#save-settings').waitFor();
          }
          const file = path.join(SHOT_DIR, `${tab}-${w}x${hgt}.png`);
          await page.screenshot({ path: file, fullPage: true });
          results.screenshots.push(file);
        }
      }
      await page.setViewportSize({ width: 390, height: 844 });
      await page.click('#nav a[data-tab="dashboard"]');
    });

    if (process.env.UPDATE_FILE) {
      // A signed bundle uploaded from the Actions tab: the box verifies it and
      // installs it into the other slot while the stream stays live.
      await step('update_upload', async () => {
        await page.click('#nav a[data-tab="actions"]');
        await page.locator('#update-file').setInputFiles(process.env.UPDATE_FILE);
        const t0 = Date.now();
        await page.click('#update-form button[type="submit"]');
        await page.waitForFunction(
          () => /Installed|Not installed/.test(document.querySelector('#update-note')?.textContent || ''),
          null,
          { timeout: 20000, polling: 100 },
        );
        const note = await page.locator('#update-note').textContent();
        if (!note.startsWith('Installed')) throw new Error(`update: ${note}`);
        const shot = path.join(SHOT_DIR, 'actions-update-390x844.png');
        await page.screenshot({ path: shot, fullPage: true });
        results.screenshots.push(shot);
        await page.click('#nav a[data-tab="dashboard"]');
        return { note, ms: Date.now() - t0 };
      });
    }

    if (process.env.SKIP_CUT !== '1') {
      await step('link_cut', async () => {
        await page.locator('.view-dashboard .link').first().waitFor();
        process.stdout.write('READY_FOR_CUT\n');
        const line = (await nextStdinLine()).trim();
        const t0 = Date.now();
        const name = line || linkName;
        const sel = `.link[data-link="${name}"]`;
        if ((await page.locator(sel).count()) === 0) throw new Error(`no link card named ${name}`);
        await page.waitForFunction(
          (s) => {
            const el = document.querySelector(s);
            return el && el.dataset.state && el.dataset.state !== 'up';
          },
          sel,
          { timeout: Math.max(CUT_DEADLINE_MS * 3, 6000), polling: 50 },
        );
        const ms = Date.now() - t0;
        results.cut_detect_ms = ms;
        process.stdout.write(`CUT_SEEN ${ms}\n`);
        if (ms > CUT_DEADLINE_MS) throw new Error(`link ${name} shown down after ${ms} ms (over ${CUT_DEADLINE_MS})`);
        const shot = path.join(SHOT_DIR, 'dashboard-cut-390x844.png');
        await page.screenshot({ path: shot, fullPage: true });
        results.screenshots.push(shot);
        return { link: name, shown_down_ms: ms };
      });
    }

    if (results.external_requests.length) throw new Error(`requests outside the box: ${results.external_requests.join(', ')}`);
    if (results.console_errors.length) throw new Error(`console errors: ${results.console_errors.join(' | ')}`);
    results.ok = true;
  } catch (e) {
    results.error = String(e && e.message ? e.message : e);
  } finally {
    await browser.close();
  }
  process.stdout.write(`${JSON.stringify(results)}\n`);
  process.exit(results.ok ? 0 : 1);
}

main().catch((e) => {
  results.error = String(e);
  process.stdout.write(`${JSON.stringify(results)}\n`);
  process.exit(1);
});
