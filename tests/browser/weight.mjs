// Page weight and time to first render of the box's page, cold cache, for
// docs/BENCHMARKS.md. Prints one JSON line:
//   bytes_transferred  what the first load moved over the wire (headers + gzip bodies)
//   bytes_body         the bodies alone as sent (gzip where the server compresses)
//   first_screen_ms    when the page drew its first real screen (performance mark
//                      `braid-first-screen` set by app.js), median
//   resources          per request: path, status, encoding, body bytes
//   fcp_ms             first-contentful-paint (Performance API), median of RUNS loads
//   dcl_ms, load_ms    DOMContentLoaded and load, medians
//
//   weak               the same first load over an emulated weak phone link
//                      (WEAK_KBPS down, default 500 kbit/s; 150 ms latency): first_screen_ms
//                      and fcp_ms
//
// Environment: BASE_URL (required), RUNS (default 5), WEAK_KBPS, CHROMIUM.
// The page's first screen (password setup or login) is what a first visit renders;
// no session is needed.

import { launch, baseUrl } from './common.mjs';

const BASE = baseUrl();
const RUNS = Math.max(1, Number(process.env.RUNS || 5));

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : null;
};

const WEAK_KBPS = Number(process.env.WEAK_KBPS || 500);

async function oneLoad(context, weak = false) {
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
  if (weak) {
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false,
      latency: 150,
      downloadThroughput: (WEAK_KBPS * 1000) / 8,
      uploadThroughput: (WEAK_KBPS * 500) / 8,
    });
  }
  const reqs = new Map();
  cdp.on('Network.responseReceived', (e) => {
    const r = e.response;
    reqs.set(e.requestId, {
      path: new URL(r.url).pathname,
      status: r.status,
      encoding: (r.headers['content-encoding'] || r.headers['Content-Encoding'] || 'identity').toLowerCase(),
      headers: r.encodedDataLength || 0,
      transferred: 0,
      body: 0,
    });
  });
  cdp.on('Network.loadingFinished', (e) => {
    const r = reqs.get(e.requestId);
    if (r) {
      r.transferred = e.encodedDataLength;
      r.body = Math.max(0, e.encodedDataLength - r.headers);
    }
  });
  await page.goto(`${BASE}/`, { waitUntil: 'load' });
  // The first screen is drawn once a form or the dashboard is there.
  await page.locator('form.auth, .view-dashboard').first().waitFor({ timeout: 30000 });
  const timing = await page.evaluate(
    () =>
      new Promise((resolve) => {
        const read = () => {
          const fcp = performance.getEntriesByName('first-contentful-paint')[0];
          const nav = performance.getEntriesByType('navigation')[0];
          const first = performance.getEntriesByName('braid-first-screen')[0];
          return {
            fcp: fcp ? fcp.startTime : null,
            first: first ? first.startTime : null,
            dcl: nav?.domContentLoadedEventEnd ?? null,
            load: nav?.loadEventEnd ?? null,
          };
        };
        const now = read();
        if (now.fcp !== null) return resolve(now);
        new PerformanceObserver(() => resolve(read())).observe({ type: 'paint', buffered: true });
        setTimeout(() => resolve(read()), 3000);
      }),
  );
  await page.waitForTimeout(200);
  await page.close();
  return { timing, resources: [...reqs.values()] };
}

async function main() {
  const browser = await launch({ width: 390, height: 844 });
  const runs = [];
  const weak = [];
  try {
    for (let i = 0; i < RUNS; i++) runs.push(await oneLoad(browser.context));
    for (let i = 0; i < Math.min(RUNS, 3); i++) weak.push(await oneLoad(browser.context, true));
  } finally {
    await browser.close();
  }
  const first = runs[0];
  const statics = first.resources.filter((r) => !r.path.startsWith('/api/'));
  const out = {
    base_url: BASE,
    runs: RUNS,
    bytes_transferred: statics.reduce((a, r) => a + r.transferred, 0),
    bytes_body: statics.reduce((a, r) => a + r.body, 0),
    all_gzip: statics.every((r) => r.encoding === 'gzip'),
    requests: first.resources.length,
    resources: first.resources.map((r) => ({ path: r.path, status: r.status, encoding: r.encoding, body: r.body, transferred: r.transferred })),
    fcp_ms: median(runs.map((r) => r.timing.fcp).filter((x) => x !== null)),
    fcp_ms_all: runs.map((r) => (r.timing.fcp === null ? null : Math.round(r.timing.fcp * 10) / 10)),
    first_screen_ms: median(runs.map((r) => r.timing.first).filter((x) => x !== null)),
    dcl_ms: median(runs.map((r) => r.timing.dcl).filter((x) => x !== null)),
    load_ms: median(runs.map((r) => r.timing.load).filter((x) => x !== null)),
    weak: {
      down_kbps: WEAK_KBPS,
      latency_ms: 150,
      fcp_ms: median(weak.map((r) => r.timing.fcp).filter((x) => x !== null)),
      first_screen_ms: median(weak.map((r) => r.timing.first).filter((x) => x !== null)),
    },
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
  const ok = out.fcp_ms !== null && statics.every((r) => r.status === 200);
  process.exit(ok ? 0 : 1);
}

main().catch((e) => {
  process.stdout.write(`${JSON.stringify({ base_url: BASE, error: String(e) })}\n`);
  process.exit(1);
});
