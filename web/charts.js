// Time-series charts on uPlot. uPlot (22 kB gzip, most of the page) is fetched only
// when the first chart is drawn, so the first screen does not wait for it on a weak
// link. The build embeds a stand-in when uPlot was not installed; the charts say so.

export const LINK_COLOURS = ['#7dcfff', '#bb9af7', '#ff9e64', '#9ece6a', '#f7768e', '#e0af68', '#2ac3de', '#c0caf5'];

const HEIGHT = 170;
const WINDOW_S = 120;

/** Wall-clock time of day, HH:MM:SS (the box's page has no dates to show). */
function clock(t) {
  const d = new Date(t * 1000);
  const two = (n) => String(n).padStart(2, '0');
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

let loading = null;

/** Loads uPlot's script and stylesheet once; resolves to whether uPlot is there. */
function loadUplot() {
  if (typeof window.uPlot === 'function') return Promise.resolve(true);
  if (!loading) {
    loading = new Promise((resolve) => {
      // build.rs rewrites these to the hashed names beside this module
      const css = document.createElement('link');
      css.rel = 'stylesheet';
      css.href = new URL('./uplot.css', import.meta.url).href;
      document.head.append(css);
      const js = document.createElement('script');
      js.src = new URL('./uplot.js', import.meta.url).href;
      js.onload = () => resolve(typeof window.uPlot === 'function');
      js.onerror = () => resolve(false);
      document.head.append(js);
    });
  }
  return loading;
}

/** A chart of Mbit/s over wall-clock time: `series` are {label, stroke, dash}. */
export class Chart {
  constructor(box, series) {
    this.box = box;
    this.plot = null;
    this.ro = null;
    this.data = null;
    this.dead = false;
    const note = document.createElement('p');
    note.className = 'muted chart-missing';
    note.textContent = 'loading chart…';
    box.replaceChildren(note);
    loadUplot().then((ok) => {
      if (this.dead) return;
      if (!ok) {
        note.textContent = 'charts unavailable (run make web-deps)';
        return;
      }
      note.remove();
      this.create(series);
    });
  }

  create(series) {
    const box = this.box;
    const opts = {
      width: this.width(),
      height: HEIGHT,
      pxAlign: 0,
      cursor: { drag: { x: false, y: false }, points: { size: 5 } },
      legend: { live: false },
      scales: {
        x: { time: true, range: (u, min, max) => [max - WINDOW_S, max] },
        y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] },
      },
      axes: [
        {
          stroke: '#9aa5ce',
          grid: { stroke: '#2a2f45', width: 1 },
          ticks: { stroke: '#2a2f45' },
          space: 60,
          values: (u, vals) => vals.map(clock),
        },
        {
          stroke: '#9aa5ce',
          size: 44,
          grid: { stroke: '#2a2f45', width: 1 },
          ticks: { stroke: '#2a2f45' },
          values: (u, vals) => vals.map((v) => `${+v.toFixed(1)}`),
          label: 'Mbit/s',
          labelSize: 16,
        },
      ],
      series: [
        {},
        ...series.map((s) => ({
          label: s.label,
          stroke: s.stroke,
          width: 2,
          dash: s.dash,
          spanGaps: false,
          points: { show: false },
          value: (u, v) => (v === null || v === undefined ? '–' : `${v.toFixed(2)} Mbit/s`),
        })),
      ],
    };
    const empty = [[], ...series.map(() => [])];
    this.plot = new window.uPlot(opts, this.data || empty, box);
    if (typeof ResizeObserver === 'function') {
      this.ro = new ResizeObserver(() => {
        const w = this.width();
        if (this.plot && Math.abs(w - this.plot.width) > 2) this.plot.setSize({ width: w, height: HEIGHT });
      });
      this.ro.observe(box);
    }
  }

  width() {
    return Math.max(200, Math.floor(this.box.clientWidth || 320));
  }

  setData(data) {
    this.data = data;
    if (this.plot) this.plot.setData(data);
  }

  destroy() {
    this.dead = true;
    if (this.ro) this.ro.disconnect();
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}
