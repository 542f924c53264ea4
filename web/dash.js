// Dashboard: the stats feed (SSE with a polling fallback), figures derived from
// successive snapshots (throughput, loss, share), and the screen that shows them.

import { get } from './api.js';
import { h, fill, setText, fmtBps, fmtBytes, fmtDuration, fmtNum } from './ui.js';
import { Chart, LINK_COLOURS } from './charts.js';

const HISTORY_S = 120;
const STALE_MS = 3500;
const SSE_RETRY_MS = 10000;
const LOSS_WINDOW_S = 10;
const STALL_S = 1.5;

/**
 * The session's stats: `/api/events` while it works, `/api/stats` once a second
 * while it does not (and a fresh try of the stream every 10 s). Keeps two minutes
 * of history for the charts.
 */
export class Feed {
  constructor() {
    this.subs = new Set();
    this.staleSubs = new Set();
    this.es = null;
    this.pollTimer = null;
    this.retryTimer = null;
    this.staleTimer = null;
    this.running = false;
    this.mode = 'off';
    this.last = null;
    this.lastAt = 0;
    this.isStale = false;
    this.points = [];
    this.perLink = new Map();
    this.onVisibility = () => {
      if (!this.running) return;
      if (document.hidden) this.disconnect();
      else this.connect();
    };
  }

  subscribe(fn) {
    this.subs.add(fn);
    if (this.last) fn(this.last, this);
    return () => this.subs.delete(fn);
  }

  onStale(fn) {
    this.staleSubs.add(fn);
  }

  start() {
    if (this.running) return;
    this.running = true;
    document.addEventListener('visibilitychange', this.onVisibility);
    this.staleTimer = setInterval(() => this.checkStale(), 1000);
    this.connect();
  }

  stop() {
    this.running = false;
    document.removeEventListener('visibilitychange', this.onVisibility);
    clearInterval(this.staleTimer);
    this.disconnect();
    this.last = null;
    this.points = [];
    this.perLink.clear();
    this.setStale(false);
  }

  connect() {
    this.disconnect();
    this.openStream();
  }

  disconnect() {
    if (this.es) this.es.close();
    this.es = null;
    clearInterval(this.pollTimer);
    clearTimeout(this.retryTimer);
    this.pollTimer = null;
    this.retryTimer = null;
    this.mode = 'off';
  }

  openStream() {
    if (typeof EventSource === 'undefined') {
      this.startPolling();
      return;
    }
    const es = new EventSource('/api/events');
    this.es = es;
    const onEvent = (ev) => {
      if (this.es !== es) return;
      if (this.mode !== 'sse') {
        // The stream works (again): polling is no longer needed.
        clearInterval(this.pollTimer);
        this.pollTimer = null;
        this.mode = 'sse';
      }
      try {
        this.handle(JSON.parse(ev.data));
      } catch {
        // a malformed event is skipped; the next one comes in a second
      }
    };
    es.addEventListener('stats', onEvent);
    es.addEventListener('message', onEvent);
    es.addEventListener('error', () => {
      if (this.es !== es) return;
      es.close();
      this.es = null;
      this.startPolling();
    });
  }

  startPolling() {
    if (!this.running) return;
    this.mode = 'poll';
    if (!this.pollTimer) {
      this.poll();
      this.pollTimer = setInterval(() => this.poll(), 1000);
    }
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      if (this.running && !this.es && !document.hidden) this.openStream();
    }, SSE_RETRY_MS);
  }

  async poll() {
    try {
      const s = await get('/api/stats');
      if (this.running && this.mode === 'poll') this.handle(s);
    } catch {
      // stale marking tells the user; a 401 was handled by the api module
    }
  }

  checkStale() {
    const stale = this.running && this.lastAt > 0 && Date.now() - this.lastAt > STALE_MS;
    if (stale && this.es && !document.hidden) {
      // The stream is open but silent (a weak link can hold a dead connection for
      // long): poll instead until a fresh stream delivers.
      this.es.close();
      this.es = null;
      this.startPolling();
    }
    this.setStale(stale);
  }

  setStale(v) {
    if (v === this.isStale) return;
    this.isStale = v;
    for (const fn of this.staleSubs) fn(v);
  }

  /** One snapshot: derive rates from the previous one, keep history, tell screens. */
  handle(s) {
    const now = Date.now();
    this.lastAt = now;
    this.setStale(false);
    const up = typeof s.uptime_s === 'number' ? s.uptime_s : now / 1000;
    const sender = s.sender || {};
    const senderLinks = new Map((sender.links || []).map((l) => [l.id, l]));
    const derived = new Map();
    let total = 0;
    let measured = false;
    for (const l of s.links || []) {
      const st = senderLinks.get(l.id);
      let hist = this.perLink.get(l.id);
      if (!hist) {
        hist = [];
        this.perLink.set(l.id, hist);
      }
      let bps = null;
      let loss = null;
      let stalled = false;
      if (st) {
        const prev = hist[hist.length - 1];
        if (prev && up > prev.t && st.bytes_sent >= prev.bytes) {
          bps = ((st.bytes_sent - prev.bytes) * 8) / (up - prev.t);
        } else if (prev && up <= prev.t) {
          // same snapshot again (a poll and an event in the same second)
          bps = prev.bps;
        }
        if (!prev || up > prev.t) {
          const ackT = !prev || st.acked !== prev.acked ? up : prev.ackT;
          hist.push({ t: up, bytes: st.bytes_sent, acked: st.acked, lost: st.lost, bps, ackT, ackBytes: !prev || st.acked !== prev.acked ? st.bytes_sent : prev.ackBytes });
        }
        const cur = hist[hist.length - 1];
        // Sending but nothing acknowledged for a while: the link is not delivering,
        // whatever its state says yet.
        stalled = !!l.connected && st.state !== 'down' && st.bytes_sent > cur.ackBytes && up - cur.ackT > Math.max(STALL_S, (3 * (st.srtt_ms || 0)) / 1000);
        while (hist.length > 2 && up - hist[0].t > LOSS_WINDOW_S) hist.shift();
        const first = hist[0];
        const dAcked = st.acked - first.acked;
        const dLost = st.lost - first.lost;
        if (dAcked + dLost > 0 && dAcked >= 0 && dLost >= 0) loss = dLost / (dAcked + dLost);
        else if (hist.length > 1) loss = 0;
      }
      if (bps !== null) {
        total += bps;
        measured = true;
      }
      derived.set(l.id, { bps, loss, stalled });
    }
    for (const id of this.perLink.keys()) {
      if (!derived.has(id)) this.perLink.delete(id);
    }
    for (const d of derived.values()) {
      d.share = total > 0 && d.bps !== null ? d.bps / total : null;
    }
    s.derived = { links: derived, totalBps: measured ? total : null };

    const last = this.points[this.points.length - 1];
    if (!last || now - last.wall > 500) {
      const linkBps = {};
      for (const l of s.links || []) linkBps[l.name] = derived.get(l.id)?.bps ?? null;
      this.points.push({
        wall: now,
        t: now / 1000,
        links: linkBps,
        target: s.bitrate ? s.bitrate.target_bps : null,
        produced: typeof s.source_bps === 'number' ? s.source_bps : null,
        sent: measured ? total : null,
      });
      while (this.points.length && now - this.points[0].wall > HISTORY_S * 1000) this.points.shift();
    }
    this.last = s;
    for (const fn of this.subs) fn(s, this);
  }
}

/** A link is carrying media: connected and the sender has it up. */
export function linkIsUp(l, st) {
  return !!l.connected && (!st || st.state !== 'down');
}

const TECH = { gsm: '2G', umts: '3G', lte: '4G LTE', nr5g: '5G NR' };

/** `interface wwan0` / `address 10.0.0.2` as the edge reports it, shortened. */
function bindText(bind) {
  return (bind || '').replace(/^interface /, 'if ').replace(/^address /, 'ip ');
}

/** The picture size for the controller's rung, from the saved video settings. */
export function resolutionFor(values, rung) {
  if (!values) return null;
  const kind = values.input?.kind ?? 'test';
  if (kind !== 'v4l2' && kind !== 'pattern') return 'not encoded on the box';
  const w = values.video?.width ?? 1280;
  const ht = values.video?.height ?? 720;
  let ladder = values.video?.ladder;
  if (!Array.isArray(ladder) || !ladder.length) {
    const even = (x) => Math.round(x / 2) * 2;
    ladder = [`${w}x${ht}`, `${even((w * 3) / 4)}x${even((ht * 3) / 4)}`, `${even(w / 2)}x${even(ht / 2)}`];
  }
  const r = Math.min(rung ?? 0, ladder.length - 1);
  return ladder[r].replace('x', '×');
}

function stat(label, key) {
  const v = h('dd', { dataset: { k: key } }, '–');
  return { el: h('div', { class: 'stat' }, h('dt', null, label), v), v };
}

function statGrid(items) {
  const refs = {};
  const els = items.map(([label, key]) => {
    const s = stat(label, key);
    refs[key] = s.v;
    return s.el;
  });
  return { el: h('dl', { class: 'stats' }, els), refs };
}

function linkCard(l, colour) {
  const r = {};
  const mk = (key, cls) => (r[key] = h('span', { class: cls, dataset: { k: key } }, '–'));
  const title = h('h3', null, h('span', { class: 'swatch', style: { background: colour }, 'aria-hidden': 'true' }), l.name);
  r.badge = h('span', { class: 'badge', role: 'status' });
  const card = h(
    'article',
    { class: 'card link', dataset: { link: l.name }, 'aria-label': `Link ${l.name}` },
    h('header', { class: 'link-head' }, title, r.badge),
    h('p', { class: 'link-sub muted' }, mk('bind'), ' · ', mk('op'), (r.techSep = h('span', null, ' · ')), mk('tech')),
    h(
      'dl',
      { class: 'stats compact' },
      h('div', { class: 'stat wide' }, h('dt', null, 'Sending'), h('dd', null, mk('bps', 'big'), ' ', mk('share', 'muted'))),
      h('div', { class: 'stat' }, h('dt', null, 'RTT'), h('dd', null, mk('rtt'))),
      h('div', { class: 'stat' }, h('dt', null, 'Loss'), h('dd', null, mk('loss'))),
      h('div', { class: 'stat' }, h('dt', null, 'RSRP'), h('dd', null, mk('rsrp'))),
      h('div', { class: 'stat' }, h('dt', null, 'SINR'), h('dd', null, mk('sinr'))),
      h('div', { class: 'stat' }, h('dt', null, 'Today'), h('dd', null, mk('day'))),
      h('div', { class: 'stat' }, h('dt', null, 'Month'), h('dd', null, mk('month'))),
      h('div', { class: 'stat wide' }, h('dt', null, 'Monthly cap'), h('dd', null, mk('cap'))),
    ),
    (r.meter = h('div', { class: 'meter', hidden: true, role: 'presentation' }, (r.fill = h('span')))),
    (r.err = h('p', { class: 'link-err', hidden: true })),
  );
  return { card, r };
}

const BADGE = { up: 'UP', probing: 'DOWN · probing', stalled: 'NO ACKS', down: 'DOWN' };

function updateLink(card, r, l, st, mv, usage, d, capMb) {
  const up = linkIsUp(l, st);
  const state = !l.connected ? 'down' : !up ? 'probing' : d?.stalled ? 'stalled' : 'up';
  card.dataset.state = state;
  card.classList.toggle('is-down', state !== 'up');
  setText(r.badge, state === 'up' && l.at_cap ? 'UP · at cap' : BADGE[state]);
  r.badge.className = `badge ${state === 'up' ? (l.at_cap ? 'warn' : 'ok') : 'bad'}`;
  const modem = l.modem || mv?.status || null;
  setText(r.bind, bindText(l.bind) || '–');
  setText(r.op, modem ? modem.operator || 'no operator' : 'no modem');
  r.tech.hidden = r.techSep.hidden = !modem;
  setText(r.tech, TECH[modem?.tech] || modem?.tech || 'no service');
  setText(r.rsrp, fmtNum(modem?.rsrp_dbm, 0, 'dBm'));
  setText(r.sinr, fmtNum(modem?.sinr_db, 1, 'dB'));
  setText(r.bps, fmtBps(d?.bps ?? null));
  setText(r.share, d?.share !== null && d?.share !== undefined ? `${Math.round(d.share * 100)} % of traffic` : '');
  setText(r.rtt, st && l.connected ? fmtNum(st.srtt_ms, st.srtt_ms < 10 ? 1 : 0, 'ms') : '–');
  setText(r.loss, d?.loss !== null && d?.loss !== undefined ? `${(d.loss * 100).toFixed(1)} %` : '–');
  setText(r.day, usage ? fmtBytes(usage.day_bytes) : '–');
  setText(r.month, usage ? fmtBytes(usage.month_bytes) : '–');
  // The cap as the usage counters know it, else as configured.
  const cap = usage ? usage.month_cap_bytes : Number.isFinite(capMb) ? capMb * 1e6 : null;
  if (cap !== null && cap !== undefined) {
    const mb = Math.round(cap / 1e6);
    r.cap.dataset.capMb = String(mb);
    if (usage) {
      const share = usage.share_of_cap ?? (cap > 0 ? usage.month_bytes / cap : 1);
      setText(r.cap, `${mb.toLocaleString('en')} MB (${Math.round(share * 100)} % used)`);
      r.meter.hidden = false;
      r.fill.style.width = `${Math.min(100, share * 100)}%`;
      r.meter.classList.toggle('full', !!usage.cap_reached);
    } else {
      setText(r.cap, `${mb.toLocaleString('en')} MB`);
      r.meter.hidden = true;
    }
  } else {
    delete r.cap.dataset.capMb;
    setText(r.cap, 'none');
    r.meter.hidden = true;
  }
  r.err.hidden = !l.last_error || up;
  if (l.last_error) setText(r.err, `Last error: ${l.last_error}`);
}

export function renderDashboard(view, { feed }) {
  let values = null;
  get('/api/settings')
    .then((s) => {
      values = s.values;
      if (feed.last) update(feed.last);
    })
    .catch(() => {});

  const head = statGrid([
    ['Stream', 'state'],
    ['Uptime', 'uptime'],
    ['Capture → relay output', 'latency'],
    ['Relay', 'relay'],
  ]);
  const enc = statGrid([
    ['Target bitrate', 'target'],
    ['Produced', 'produced'],
    ['Sent (all links)', 'sent'],
    ['Resolution', 'res'],
  ]);
  const dev = statGrid([
    ['Temperature', 'temp'],
    ['CPU', 'cpu'],
    ['Memory', 'mem'],
    ['Relay released / lost / late', 'rel'],
  ]);
  const linksBox = h('div', { class: 'links', 'aria-live': 'off' });
  const chartLinks = h('div', { class: 'chart' });
  const chartRate = h('div', { class: 'chart' });
  const events = h('ol', { class: 'events', reversed: true });
  const waiting = h('p', { class: 'muted' }, 'Waiting for the first figures…');

  fill(
    view,
    waiting,
    h('section', { class: 'card', 'aria-labelledby': 'h-stream' }, h('h2', { id: 'h-stream' }, 'Stream'), head.el),
    h('section', { 'aria-labelledby': 'h-links' }, h('h2', { id: 'h-links', class: 'sec' }, 'Links'), linksBox),
    h(
      'section',
      { class: 'card half', 'aria-labelledby': 'h-enc' },
      h('h2', { id: 'h-enc' }, 'Encoder'),
      enc.el,
      h('h3', { class: 'chart-title' }, 'Bitrate, last 2 minutes'),
      chartRate,
    ),
    h('section', { class: 'card half', 'aria-labelledby': 'h-tp' }, h('h2', { id: 'h-tp' }, 'Throughput per link, last 2 minutes'), chartLinks),
    h('section', { class: 'card half', 'aria-labelledby': 'h-dev' }, h('h2', { id: 'h-dev' }, 'Box'), dev.el),
    h('section', { class: 'card half', 'aria-labelledby': 'h-ev' }, h('h2', { id: 'h-ev' }, 'Recent events'), events),
  );

  const rateChart = new Chart(chartRate, [
    { label: 'Target', stroke: '#7aa2f7', dash: [6, 4] },
    { label: 'Produced', stroke: '#9ece6a' },
    { label: 'Sent', stroke: '#e0af68' },
  ]);
  let linkChart = null;
  let linkKey = '';
  let cards = new Map();
  let cardsKey = '';
  let lastEvents = '';

  function update(s) {
    waiting.hidden = true;
    const hr = head.refs;
    const state = s.state || 'booting';
    fill(hr.state, h('span', { class: `pill st-${state}` }, state), s.live ? ' sending' : ' not sending');
    setText(hr.uptime, fmtDuration(s.uptime_s));
    const rel = s.relay;
    // Camera capture to relay output, measured by the relay (its summary).
    const p50 = rel?.capture_to_output_p50_ms;
    const p95 = rel?.capture_to_output_p95_ms;
    let lat = rel ? `${rel.latency_ms} ms budget` : '–';
    if (Number.isFinite(p50)) lat = `p50 ${Math.round(p50)} ms, p95 ${Number.isFinite(p95) ? Math.round(p95) : '–'} ms (budget ${rel?.latency_ms ?? '–'})`;
    setText(hr.latency, lat);
    const anyUp = (s.links || []).some((l) => l.connected);
    setText(hr.relay, anyUp ? (rel ? 'connected' : 'connected, no summary yet') : 'not connected');
    hr.relay.className = anyUp ? 'ok-text' : 'bad-text';

    const er = enc.refs;
    setText(er.target, s.bitrate ? fmtBps(s.bitrate.target_bps) + (s.bitrate.hot ? ' (hot: capped)' : '') : 'not adapting');
    setText(er.produced, fmtBps(s.source_bps));
    setText(er.sent, fmtBps(s.derived.totalBps));
    setText(er.res, s.picture ?? resolutionFor(values, s.bitrate?.rung) ?? '–');

    const dr = dev.refs;
    const temps = s.health?.temperatures || [];
    const hot = temps.reduce((m, t) => (m && m.celsius >= t.celsius ? m : t), null);
    setText(dr.temp, hot ? `${hot.celsius.toFixed(1)} °C (${hot.label})` : '–');
    setText(dr.cpu, s.health ? `${s.health.cpu_percent.toFixed(0)} % of ${s.health.cores} cores, load ${s.health.load[0].toFixed(2)}` : '–');
    setText(dr.mem, s.health ? `${fmtBytes(s.health.mem_used_bytes)} of ${fmtBytes(s.health.mem_total_bytes)}` : '–');
    setText(dr.rel, rel ? `${rel.released.toLocaleString('en')} / ${rel.lost} / ${rel.late}` : '–');

    const links = s.links || [];
    const key = links.map((l) => `${l.id}:${l.name}`).join(',');
    if (key !== cardsKey) {
      cardsKey = key;
      cards = new Map();
      fill(
        linksBox,
        links.length ? null : h('p', { class: 'muted' }, 'No links configured.'),
        links.map((l, i) => {
          const c = linkCard(l, LINK_COLOURS[i % LINK_COLOURS.length]);
          cards.set(l.id, c);
          return c.card;
        }),
      );
    }
    const sl = new Map((s.sender?.links || []).map((x) => [x.id, x]));
    const ul = new Map((s.usage?.links || []).map((x) => [x.link, x]));
    const mv = new Map((s.modems || []).filter((m) => m.link).map((m) => [m.link, m]));
    for (const l of links) {
      const c = cards.get(l.id);
      const conf = Array.isArray(values?.link) ? values.link.find((x) => x.name === l.name) : null;
      updateLink(c.card, c.r, l, sl.get(l.id), mv.get(l.name), ul.get(l.name), s.derived.links.get(l.id), conf?.data_cap_mb);
    }

    // Charts: per-link throughput and target vs produced, in Mbit/s.
    const pts = feed.points;
    const ts = pts.map((p) => p.t);
    const mbit = (v) => (v === null || v === undefined ? null : v / 1e6);
    if (linkKey !== key) {
      linkKey = key;
      if (linkChart) linkChart.destroy();
      linkChart = new Chart(
        chartLinks,
        links.map((l, i) => ({ label: l.name, stroke: LINK_COLOURS[i % LINK_COLOURS.length] })),
      );
    }
    linkChart.setData([ts, ...links.map((l) => pts.map((p) => mbit(p.links[l.name])))]);
    rateChart.setData([ts, pts.map((p) => mbit(p.target)), pts.map((p) => mbit(p.produced)), pts.map((p) => mbit(p.sent))]);

    const evs = (s.events || []).slice(-8).reverse();
    const evKey = evs.join('\n');
    if (evKey !== lastEvents) {
      lastEvents = evKey;
      fill(events, evs.length ? evs.map((e) => h('li', null, e)) : h('li', { class: 'muted' }, 'none yet'));
    }
  }

  const unsub = feed.subscribe(update);
  return () => {
    unsub();
    rateChart.destroy();
    if (linkChart) linkChart.destroy();
  };
}
