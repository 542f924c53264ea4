// A stand-in for `braid edge`'s web API (docs/web-api.md), to develop the page and
// its browser scripts without the daemon. Serves web/ files as they are (uPlot from
// node_modules) and fake /api/* with moving numbers. Not part of the product.
//
//   node web/dev/mock-server.mjs [PORT]     (PORT 0 or unset: any free port)
//
// Prints `listening on http://127.0.0.1:PORT` once ready. Test hooks (no session):
//   POST /__cut?link=N     mark link N down (not connected, sender state down)
//   POST /__restore?link=N bring it back
//   POST /__sse?on=0|1     make /api/events fail (503) to exercise the polling fallback
//   MOCK_PASSWORD=...      start with that password already set
//   MOCK_ASSETS=FILE       serve the page as build.rs embedded it: FILE is the generated
//                          OUT_DIR/web_assets.rs (hashed names, its gzip bytes, ETags)
//   MOCK_STATS_URL=URL     take the snapshots from a real edge's stats listener
//                          (e.g. http://127.0.0.1:8081/api/stats) instead of inventing them

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';

const WEB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const UPLOT = path.join(WEB, 'node_modules', 'uplot', 'dist');

const STATIC = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/index.html': ['index.html', 'text/html; charset=utf-8'],
  '/uplot.js': [path.join(UPLOT, 'uPlot.iife.min.js'), 'text/javascript; charset=utf-8'],
  '/uplot.css': [path.join(UPLOT, 'uPlot.min.css'), 'text/css; charset=utf-8'],
};

let password = process.env.MOCK_PASSWORD || null;
const sessions = new Map(); // cookie -> csrf
let sseEnabled = true;
const started = Date.now();

// ---- settings -------------------------------------------------------------
const F = (key, section, label, type, extra = {}) => ({ key, section, label, type, apply: 'stream', ...extra });
const fields = [
  F('device.id', 'device', 'Device id', 'string', { help: 'Must match a [[device]] id in the relay', apply: 'service' }),
  F('relay.address', 'relay', 'Relay address', 'string', { help: 'HOST:PORT of the relay' }),
  F('relay.latency_ms', 'relay', 'Latency budget', 'int', { min: 50, max: 10000, unit: 'ms', default: 500, help: 'End-to-end latency budget' }),
  F('input.kind', 'input', 'Source', 'enum', { options: ['udp', 'test', 'v4l2', 'pattern', 'srt'], default: 'test' }),
  F('input.passphrase', 'input', 'SRT passphrase', 'secret', { help: '10 to 79 characters' }),
  F('video.width', 'video', 'Width', 'int', { min: 64, max: 7680, default: 1280, unit: 'px' }),
  F('video.height', 'video', 'Height', 'int', { min: 64, max: 4320, default: 720, unit: 'px' }),
  F('video.fps', 'video', 'Frame rate', 'int', { min: 1, max: 120, default: 30, unit: 'fps' }),
  F('video.max_kbps', 'video', 'Maximum bitrate', 'int', { min: 100, max: 100000, default: 12000, unit: 'kbit/s', apply: 'live' }),
  F('video.ladder', 'video', 'Picture ladder', 'strings', { help: 'WIDTHxHEIGHT, largest first' }),
  F('audio.enabled', 'audio', 'Send audio', 'bool', { default: true }),
  F('audio.devices', 'audio', 'ALSA devices', 'strings', { default: ['default'] }),
  F('link.*.name', 'link', 'Name', 'string', { help: 'Unique, A-Z a-z 0-9 _ -' }),
  F('link.*.interface', 'link', 'Interface', 'string', { help: 'e.g. wwan0 (or give bind)' }),
  F('link.*.bind', 'link', 'Bind address', 'string', { help: 'Local source IP (or give interface)' }),
  F('link.*.enabled', 'link', 'Enabled', 'bool', { default: true }),
  F('link.*.data_cap_mb', 'link', 'Monthly data cap', 'int', { min: 1, max: 100000000, unit: 'MB', apply: 'live', help: 'Metered SIM allowance' }),
  F('scheduler.duplicate_budget', 'scheduler', 'Duplicate budget', 'float', { min: 0, max: 0.5, default: 0.02, apply: 'live' }),
  F('stream.autostart', 'stream', 'Start by itself', 'bool', { default: true, apply: 'live' }),
  F('web.listen', 'web', 'Listen address', 'string', { apply: 'service' }),
];
let values = {
  device: { id: 'cam1' },
  relay: { address: 'relay.example.net:7000', latency_ms: 800 },
  input: { kind: 'pattern' },
  video: { width: 1920, height: 1080, fps: 30 },
  link: [
    { name: 'modem0', interface: 'wwan0', data_cap_mb: 20000 },
    { name: 'modem1', interface: 'wwan1' },
    { name: 'wifi', bind: '10.42.0.7', enabled: true },
  ],
  web: { listen: '0.0.0.0:80' },
};
let restartPending = [];
const revision = () => crypto.createHash('sha256').update(JSON.stringify(values)).digest('hex');

function fieldFor(key) {
  const generic = key.replace(/^link\.\d+\./, 'link.*.');
  return fields.find((f) => f.key === generic);
}

function setAt(obj, key, v) {
  const parts = key.split('.');
  let o = obj;
  for (let i = 0; i < parts.length - 1; i++) {
    const p = parts[i];
    if (o[p] === undefined) o[p] = /^\d+$/.test(parts[i + 1]) ? [] : {};
    o = o[p];
  }
  const last = parts[parts.length - 1];
  if (v === null) delete o[last];
  else o[last] = v;
}

function validate(key, v) {
  const f = fieldFor(key);
  if (!f) return key === 'link' ? null : 'unknown key';
  if (v === null) return null;
  if (f.type === 'int' && !Number.isInteger(v)) return 'must be a whole number';
  if ((f.type === 'int' || f.type === 'float') && (v < f.min || v > f.max)) return `must be between ${f.min} and ${f.max}, got ${v}`;
  if (f.type === 'secret' && (v.length < 10 || v.length > 79)) return 'needs 10 to 79 characters';
  if (key.endsWith('.name') && !/^[A-Za-z0-9_-]{1,64}$/.test(v)) return '1 to 64 characters from A-Z a-z 0-9 _ -';
  return null;
}

// ---- stats ----------------------------------------------------------------
const links = values.link.map((l, id) => ({ id, name: l.name, bytes: 0, acked: 0, lost: 0, down: false, connects: 1 }));
const usage = links.map(() => ({ day: 3.2e8, month: 7.7e9 }));
let lastTick = Date.now();

function tick() {
  const now = Date.now();
  const dt = (now - lastTick) / 1000;
  lastTick = now;
  const t = (now - started) / 1000;
  links.forEach((l, i) => {
    const rate = l.down ? 0 : (1.5 + Math.sin(t / 7 + i * 2) * 0.8 + Math.random() * 0.3) * 1e6 * (i === 2 ? 0.6 : 1);
    const b = Math.round((rate / 8) * dt);
    l.bytes += b;
    usage[i].day += b;
    usage[i].month += b;
    const pk = Math.round(b / 1200);
    const lost = Math.random() < 0.3 ? Math.round(pk * 0.01) : 0;
    l.acked += pk - lost;
    l.lost += lost;
  });
}
setInterval(tick, 250);

function snapshot() {
  const t = (Date.now() - started) / 1000;
  const anyDown = links.some((l) => l.down);
  const target = 4.5e6 + Math.sin(t / 9) * 1e6;
  return {
    device: 'cam1',
    session: 42,
    uptime_s: t + 3600 * 5,
    first_packet_after_s: 2.1,
    live_after_s: 4.3,
    state: anyDown ? 'degraded' : 'live',
    live: true,
    health: {
      cpu_percent: 30 + Math.random() * 10,
      cores: 4,
      load: [1.2, 1.1, 0.9],
      mem_used_bytes: 612e6,
      mem_total_bytes: 4e9,
      temperatures: [{ label: 'cpu-thermal', celsius: 54 + Math.sin(t / 20) * 3 }],
      disk: { mount_point: '/var/lib/braid', total_bytes: 32e9, available_bytes: 20e9, used_bytes: 12e9 },
      uptime_s: Math.round(t + 4000),
    },
    modems: links.slice(0, 2).map((l, i) => ({
      port: { tty: `/dev/ttyUSB${2 + i * 4}`, interface: 2, netdev: `wwan${i}`, usb_path: `1-${i + 1}`, vendor: 0x2c7c, product: 0x125, manufacturer: 'Quectel', product_name: 'EC25' },
      link: l.name,
      quality: 1,
      status: { port: `/dev/ttyUSB${2 + i * 4}`, state: 'present', operator: ['Vodafone', 'O2 - DE'][i], tech: ['lte', 'nr5g'][i], rsrp_dbm: -92 - i * 9, sinr_db: 12.5 - i * 6 },
    })),
    usage: {
      day: '2026-11-28',
      month_start: '2026-11-01',
      billing_day: 1,
      links: links.map((l, i) => {
        const capMb = values.link[i]?.data_cap_mb;
        const cap = capMb ? capMb * 1e6 : null;
        return {
          link: l.name,
          day_bytes: Math.round(usage[i].day),
          prev_day_bytes: 9.1e8,
          month_bytes: Math.round(usage[i].month),
          prev_month_bytes: 1.8e10,
          month_cap_bytes: cap,
          cap_reached: cap !== null && usage[i].month >= cap,
          share_of_cap: cap ? usage[i].month / cap : null,
        };
      }),
    },
    links: links.map((l, i) => ({
      id: l.id,
      name: l.name,
      bind: values.link[i]?.interface ? `interface ${values.link[i].interface}` : `address ${values.link[i]?.bind}`,
      connected: !l.down,
      connects: l.connects,
      last_error: l.down ? 'timed out' : null,
      quality: 1,
      at_cap: false,
      modem:
        i < 2
          ? { tty: `/dev/ttyUSB${2 + i * 4}`, state: 'present', operator: ['Vodafone', 'O2 - DE'][i], tech: ['lte', 'nr5g'][i], rsrp_dbm: -92 - i * 9 + Math.round(Math.random() * 3), sinr_db: 12.5 - i * 6 + Math.random() }
          : null,
    })),
    sender: {
      media_packets_in: 123456,
      media_bytes_in: 1e9,
      edge_queue: 3,
      delivered_bytes: links.reduce((a, l) => a + l.bytes, 0),
      sent_bytes: links.reduce((a, l) => a + l.bytes, 0),
      expired_unsent: 2,
      expired_unrepaired: 1,
      nacks_received: 40,
      nacks_ignored: 0,
      retransmits: 88,
      duplicates: 120,
      junk_feedback: 0,
      first_media_acked_s: 4.3,
      links: links.map((l, i) => ({
        id: l.id,
        state: l.down ? 'down' : 'up',
        srtt_ms: 45 + i * 20 + Math.random() * 8,
        min_rtt_ms: 38 + i * 20,
        rate_bps: 2e6,
        inflight_bytes: 20000,
        datagrams_sent: Math.round(l.bytes / 1200),
        bytes_sent: l.bytes,
        media_first_sent: 1,
        retransmits_sent: 1,
        duplicates_sent: 1,
        probes_sent: 1,
        acked: l.acked,
        lost: l.lost,
        downs: l.down ? 1 : 0,
        quality: 1,
      })),
    },
    relay: { released: Math.round(t * 900), lost: 3, late: 1, duplicates: 50, latency_ms: values.relay.latency_ms ?? 500, capture_to_output_p50_ms: 548, capture_to_output_p95_ms: 561 },
    bitrate: { target_bps: Math.round(target), rung: 0, capacity_bps: 6e6, queue_ms: 12, cuts: 2, rung_changes: 0, hot: false, floor_bps: 700000, ceiling_bps: 12000000 },
    picture: '1280x720',
    source_bps: target * (0.93 + Math.random() * 0.05),
    events: ['3.012s link modem0 up', '3.020s link modem1 up', '3.100s link wifi up', ...links.filter((l) => l.down).map((l) => `${t.toFixed(3)}s link ${l.name} down`)],
  };
}

async function stats() {
  if (!process.env.MOCK_STATS_URL) return snapshot();
  const r = await fetch(process.env.MOCK_STATS_URL);
  return r.json();
}

// ---- HTTP -----------------------------------------------------------------
function send(res, status, body, headers = {}) {
  const h = { 'Cache-Control': 'no-store', ...headers };
  if (body === undefined) {
    res.writeHead(status, h);
    return res.end();
  }
  h['Content-Type'] = 'application/json';
  res.writeHead(status, h);
  res.end(JSON.stringify(body));
}

function session(req) {
  const m = /(?:^|;\s*)braid_session=([^;]+)/.exec(req.headers.cookie || '');
  return m && sessions.has(m[1]) ? m[1] : null;
}

function newSession(res) {
  const id = crypto.randomBytes(32).toString('hex');
  const csrf = crypto.randomBytes(16).toString('hex');
  sessions.set(id, csrf);
  res.setHeader('Set-Cookie', `braid_session=${id}; HttpOnly; SameSite=Strict; Path=/`);
  return csrf;
}

async function body(req) {
  let s = '';
  for await (const c of req) s += c;
  try {
    return JSON.parse(s || '{}');
  } catch {
    return undefined;
  }
}

// The build's table: path -> {gz, plain, type, etag, immutable}.
const embedded = new Map();
if (process.env.MOCK_ASSETS) {
  const table = fs.readFileSync(process.env.MOCK_ASSETS, 'utf8');
  const re = /\("([^"]+)", Asset \{ gzip: include_bytes!\("([^"]+)"\), plain: include_bytes!\("([^"]+)"\), content_type: "([^"]+)", etag: "\\"([0-9a-f]+)\\"", immutable: (true|false) \}\)/g;
  for (const m of table.matchAll(re)) {
    embedded.set(m[1], { gz: fs.readFileSync(m[2]), plain: fs.readFileSync(m[3]), type: m[4], etag: `"${m[5]}"`, immutable: m[6] === 'true' });
  }
  if (!embedded.has('/')) throw new Error(`no page found in ${process.env.MOCK_ASSETS}`);
}

function serveEmbedded(req, res, url) {
  const a = embedded.get(url.pathname === '/index.html' ? '/' : url.pathname);
  if (!a) return false;
  const headers = { 'Content-Type': a.type, ETag: a.etag, 'Cache-Control': a.immutable ? 'public, max-age=31536000, immutable' : 'no-cache', Vary: 'Accept-Encoding' };
  if (req.headers['if-none-match'] === a.etag) {
    res.writeHead(304, headers);
    res.end();
    return true;
  }
  const gz = /\bgzip\b/.test(req.headers['accept-encoding'] || '');
  if (gz) headers['Content-Encoding'] = 'gzip';
  res.writeHead(200, headers);
  res.end(gz ? a.gz : a.plain);
  return true;
}

function serveStatic(req, res, url) {
  if (embedded.size) return serveEmbedded(req, res, url);
  let entry = STATIC[url.pathname];
  if (!entry && /^\/[a-z]+\.(js|css)$/.test(url.pathname)) {
    entry = [url.pathname.slice(1), url.pathname.endsWith('.js') ? 'text/javascript; charset=utf-8' : 'text/css; charset=utf-8'];
  }
  if (!entry) return false;
  const file = path.isAbsolute(entry[0]) ? entry[0] : path.join(WEB, entry[0]);
  let data;
  try {
    data = fs.readFileSync(file);
  } catch {
    data = Buffer.from(url.pathname === '/uplot.js' ? '/* uPlot missing: run make web-deps */' : '');
  }
  const headers = { 'Content-Type': entry[1], 'Cache-Control': 'no-cache' };
  if (/\bgzip\b/.test(req.headers['accept-encoding'] || '')) {
    data = zlib.gzipSync(data, { level: 9 });
    headers['Content-Encoding'] = 'gzip';
  }
  res.writeHead(200, headers);
  res.end(data);
  return true;
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  const p = url.pathname;
  const m = req.method;

  if (p.startsWith('/__')) {
    const i = Number(url.searchParams.get('link') ?? 0);
    if (p === '/__cut' && links[i]) links[i].down = true;
    else if (p === '/__restore' && links[i]) {
      links[i].down = false;
      links[i].connects += 1;
    } else if (p === '/__sse') sseEnabled = url.searchParams.get('on') !== '0';
    else return send(res, 404, { error: 'no such hook' });
    return send(res, 200, { ok: true });
  }
  if (!p.startsWith('/api/')) {
    if (m === 'GET' && serveStatic(req, res, url)) return;
    return send(res, 404, { error: 'not found' });
  }

  const sid = session(req);
  const mutating = m === 'POST' || m === 'PUT' || m === 'DELETE';
  if (p === '/api/health') return send(res, 200, { ok: true, version: '0.1.0', state: 'live' });
  if (p === '/api/auth' && m === 'GET') return send(res, 200, { password_set: !!password, logged_in: !!sid, csrf: sid ? sessions.get(sid) : null });
  if (p === '/api/auth/setup' || p === '/api/auth/login') {
    if (m !== 'POST') return send(res, 405, { error: 'method not allowed' });
    if (!(req.headers['content-type'] || '').includes('application/json')) return send(res, 415, { error: 'JSON only' });
    const b = await body(req);
    if (!b || typeof b.password !== 'string') return send(res, 400, { error: 'password missing' });
    if (p === '/api/auth/setup') {
      if (password) return send(res, 409, { error: 'a password is already set' });
      if (b.password.length < 8 || b.password.length > 128) return send(res, 422, { error: 'password: 8 to 128 characters' });
      password = b.password;
    } else if (!password || b.password !== password) {
      return send(res, 401, { error: 'wrong password' });
    }
    return send(res, 200, { csrf: newSession(res) });
  }
  if (!password || !sid) return send(res, 401, { error: 'not logged in' });
  if (mutating && req.headers['x-csrf-token'] !== sessions.get(sid)) return send(res, 403, { error: 'bad CSRF token' });

  if (p === '/api/auth/logout' && m === 'POST') {
    sessions.delete(sid);
    return send(res, 204, undefined, { 'Set-Cookie': 'braid_session=; Max-Age=0; Path=/' });
  }
  if (p === '/api/auth/password' && m === 'POST') {
    const b = await body(req);
    if (!b || b.old !== password) return send(res, 401, { error: 'wrong password' });
    if (typeof b.new !== 'string' || b.new.length < 8 || b.new.length > 128) return send(res, 422, { error: 'new: 8 to 128 characters' });
    password = b.new;
    for (const k of [...sessions.keys()]) if (k !== sid) sessions.delete(k);
    return send(res, 204);
  }
  if (p === '/api/stats' && m === 'GET') return send(res, 200, await stats());
  if (p === '/api/events' && m === 'GET') {
    if (!sseEnabled) return send(res, 503, { error: 'events off (mock hook)' });
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store' });
    const push = async () => {
      try {
        res.write(`event: stats\ndata: ${JSON.stringify(await stats())}\n\n`);
      } catch {
        res.end();
      }
    };
    push();
    const timer = setInterval(() => {
      if (!sseEnabled || !sessions.has(sid)) {
        clearInterval(timer);
        return res.end();
      }
      push();
    }, 1000);
    req.on('close', () => clearInterval(timer));
    return;
  }
  if (p === '/api/settings' && m === 'GET') {
    const shown = structuredClone(values);
    if (shown.input?.passphrase) shown.input.passphrase = '<redacted>';
    return send(res, 200, { revision: revision(), values: shown, fields, restart_pending: restartPending });
  }
  if (p === '/api/settings' && m === 'PUT') {
    const b = await body(req);
    if (!b || typeof b.changes !== 'object') return send(res, 400, { error: 'changes missing' });
    if (b.revision !== revision()) return send(res, 409, { error: 'the settings changed since they were read' });
    const errors = [];
    for (const [k, v] of Object.entries(b.changes)) {
      if (k === 'link') {
        if (!Array.isArray(v) || v.length < 1 || v.length > 8) errors.push({ field: 'link', message: '1 to 8 links' });
        else
          v.forEach((l, i) => {
            for (const [sk, sv] of Object.entries(l)) {
              const e = validate(`link.${i}.${sk}`, sv);
              if (e) errors.push({ field: `link.${i}.${sk}`, message: e });
            }
            if (!l.name) errors.push({ field: `link.${i}.name`, message: 'missing' });
            if (!l.interface === !l.bind) errors.push({ field: `link.${i}.interface`, message: 'give exactly one of interface / bind' });
          });
        continue;
      }
      const e = validate(k, v);
      if (e) errors.push({ field: k, message: e });
    }
    if (errors.length) return send(res, 422, { errors });
    const applied = [];
    const restartNeeded = [];
    for (const [k, v] of Object.entries(b.changes)) {
      if (k === 'input.passphrase' && v === '<redacted>') continue;
      setAt(values, k, v);
      const f = fieldFor(k);
      if (!f || f.apply !== 'live') restartNeeded.push(k);
      else applied.push(k);
    }
    restartPending = [...new Set([...restartPending, ...restartNeeded])];
    return send(res, 200, { revision: revision(), applied, restart_needed: restartPending, values });
  }
  if (p === '/api/stream/start' && m === 'POST') return send(res, 200, { live: true });
  if (p === '/api/stream/stop' && m === 'POST') return send(res, 200, { live: false });
  if (p === '/api/stream/restart' && m === 'POST') {
    restartPending = restartPending.filter((k) => fieldFor(k)?.apply === 'service');
    await new Promise((r) => setTimeout(r, 300));
    return send(res, 200, {});
  }
  if (p === '/api/system/reboot' && m === 'POST') return send(res, 202, {});
  if (p === '/api/logs' && m === 'GET') {
    const n = Math.min(2000, Math.max(1, Number(url.searchParams.get('lines') || 200)));
    return send(res, 200, { source: 'memory', lines: Array.from({ length: Math.min(n, 40) }, (_, i) => `2026-11-28T08:${String(i).padStart(2, '0')}:00Z INFO braid::edge: mock line ${i}`) });
  }
  if (p === '/api/diagnostics' && m === 'GET') {
    res.writeHead(200, { 'Content-Type': 'application/gzip', 'Content-Disposition': 'attachment; filename="braid-diagnostics.tar.gz"' });
    return res.end(zlib.gzipSync(Buffer.from('mock diagnostics\n')));
  }
  return send(res, 404, { error: 'not found' });
});

server.listen(Number(process.argv[2] || process.env.PORT || 0), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
