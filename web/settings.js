// Settings: a form generated from GET /api/settings `fields`, saved with only the
// changed keys (PUT /api/settings), errors next to their fields.

import { get, put, post, reason } from './api.js';
import { h, fill, toast, uid } from './ui.js';

const REDACTED = '<redacted>';

/** `values` at a dotted key (`link.1.name`), undefined when absent. */
export function valueAt(values, key) {
  let v = values;
  for (const part of key.split('.')) {
    if (v === null || v === undefined || typeof v !== 'object') return undefined;
    v = v[part];
  }
  return v;
}

const APPLY_NOTE = { live: null, stream: 'stream restart', service: 'braid restart' };

function labelText(f) {
  return f.label || f.key.split('.').pop();
}

/** One input for field `f` under `key` holding `value`; `ref.read()` gives its value. */
function fieldInput(f, key, value) {
  const id = uid('f');
  const helpId = `${id}-help`;
  const errId = `${id}-err`;
  const common = { id, name: key, dataset: { key }, 'aria-describedby': `${helpId} ${errId}` };
  const ph = f.default !== undefined && f.default !== null ? `default: ${Array.isArray(f.default) ? f.default.join(', ') : f.default}` : '';
  let input;
  let read;
  switch (f.type) {
    case 'bool': {
      input = h('input', { ...common, type: 'checkbox', checked: value === undefined ? !!f.default : !!value });
      read = () => input.checked;
      break;
    }
    case 'int':
    case 'float': {
      input = h('input', {
        ...common,
        type: 'number',
        inputmode: f.type === 'int' ? 'numeric' : 'decimal',
        step: f.type === 'int' ? '1' : 'any',
        min: f.min,
        max: f.max,
        placeholder: ph,
        value: value === undefined || value === null ? '' : String(value),
      });
      read = () => {
        const t = input.value.trim();
        if (t === '') return input.validity.badInput ? NaN : null;
        return Number(t);
      };
      break;
    }
    case 'enum': {
      const opts = (f.options || []).map((o) => h('option', { value: String(o), selected: value === o }, String(o)));
      input = h(
        'select',
        common,
        h('option', { value: '', selected: value === undefined || value === null }, ph ? `(${ph})` : '(not set)'),
        opts,
      );
      read = () => {
        if (input.value === '') return null;
        return (f.options || []).find((o) => String(o) === input.value) ?? input.value;
      };
      break;
    }
    case 'strings': {
      input = h('textarea', {
        ...common,
        rows: 2,
        placeholder: ph ? `${ph} (one per line)` : 'one per line',
        value: Array.isArray(value) ? value.join('\n') : '',
      });
      read = () => {
        const list = input.value
          .split('\n')
          .map((s) => s.trim())
          .filter(Boolean);
        return list.length ? list : null;
      };
      break;
    }
    case 'secret': {
      const set = value !== undefined && value !== null;
      input = h('input', {
        ...common,
        type: 'password',
        autocomplete: 'new-password',
        placeholder: set ? 'set (type to replace)' : 'not set',
        value: '',
      });
      read = () => (input.value === '' ? undefined : input.value);
      break;
    }
    default: {
      input = h('input', {
        ...common,
        type: 'text',
        autocomplete: 'off',
        spellcheck: false,
        placeholder: ph,
        value: value === undefined || value === null ? '' : String(value),
      });
      read = () => (input.value.trim() === '' ? null : input.value.trim());
    }
  }
  const note = APPLY_NOTE[f.apply];
  const unit = f.unit ? ` (${f.unit})` : '';
  const err = h('p', { id: errId, class: 'field-error', role: 'alert' });
  const help = h('p', { id: helpId, class: 'help' }, f.help || '', note ? h('span', { class: `apply apply-${f.apply}` }, `needs ${note}`) : null);
  const label = h('label', { for: id }, labelText(f), unit);
  const wrap = h('div', { class: `field field-${f.type}` }, f.type === 'bool' ? h('div', { class: 'check' }, input, label) : [label, input], help, err);
  return { key, f, input, read, err, wrap };
}

/** The comparable form of a saved value for field `f` (absent bool = its default). */
function baseline(f, v) {
  if (v === undefined || v === null) return f.type === 'bool' ? !!f.default : null;
  return v;
}

export function renderSettings(view) {
  const status = h('p', { class: 'muted', role: 'status' }, 'Loading settings…');
  const banner = h('div', { class: 'banner', hidden: true, role: 'region', 'aria-label': 'Restart needed' });
  const formBox = h('div');
  fill(view, h('h1', { class: 'sr-only' }, 'Settings'), banner, status, formBox);

  let revision = null;
  let values = null;
  let fields = [];
  let inputs = [];
  let linkRows = [];
  let linksChanged = false;
  let linkList = null;
  let linkFields = [];
  let alive = true;

  function showRestart(list) {
    const items = (list || []).map((x) => (typeof x === 'string' ? x : x.key || x.field || JSON.stringify(x)));
    if (!items.length) {
      banner.hidden = true;
      return;
    }
    const applyOf = (k) => {
      const generic = k.replace(/^link\.\d+\./, 'link.*.');
      return fields.find((f) => f.key === k || f.key === generic)?.apply;
    };
    const service = items.filter((k) => applyOf(k) === 'service');
    const stream = items.filter((k) => applyOf(k) !== 'service');
    const btn = h('button', { type: 'button', class: 'btn primary', id: 'restart-stream' }, 'Restart stream');
    btn.addEventListener('click', async () => {
      btn.disabled = true;
      btn.textContent = 'Restarting…';
      try {
        await post('/api/stream/restart');
        toast('Stream restarted with the saved settings');
        await load(false);
      } catch (e) {
        toast(`Restart failed: ${reason(e)}`, 'error');
        btn.disabled = false;
        btn.textContent = 'Restart stream';
      }
    });
    fill(
      banner,
      stream.length ? h('p', null, h('strong', null, 'Saved, waiting for a stream restart: '), stream.join(', ')) : null,
      stream.length ? btn : null,
      service.length ? h('p', null, h('strong', null, 'Saved, applied when braid restarts (or the box reboots): '), service.join(', ')) : null,
    );
    banner.hidden = false;
  }

  function linkEditor(i, link) {
    const rows = linkFields.map((f) => {
      const key = `link.${i}.${f.key.slice('link.*.'.length)}`;
      return fieldInput(f, key, link ? valueAt(link, f.key.slice('link.*.'.length)) : undefined);
    });
    const name = link?.name || `new link ${i + 1}`;
    const remove = h('button', { type: 'button', class: 'btn small danger', 'aria-label': `Remove link ${name}` }, 'Remove');
    const box = h('fieldset', { class: 'link-edit', dataset: { index: String(i) } }, h('legend', null, `Link ${i + 1}: ${name}`), h('div', { class: 'grid' }, rows.map((r) => r.wrap)), remove);
    const row = { box, rows, original: link || {} };
    remove.addEventListener('click', () => {
      const at = linkRows.indexOf(row);
      if (at < 0) return;
      linksChanged = true;
      const kept = collectLinks();
      kept.splice(at, 1);
      renderLinks(kept);
    });
    return row;
  }

  /** The links as the form holds them now (unknown keys of each link kept). */
  function collectLinks() {
    return linkRows.map((row) => {
      const obj = { ...row.original };
      for (const r of row.rows) {
        const sub = r.key.split('.').slice(2).join('.');
        const v = r.read();
        if (v === undefined) continue;
        // an absent key left at its default stays absent
        if (!(sub in row.original) && JSON.stringify(v) === JSON.stringify(baseline(r.f, undefined))) continue;
        if (v === null) delete obj[sub];
        else obj[sub] = v;
      }
      return obj;
    });
  }

  function renderLinks(list) {
    linkRows = list.map((l, i) => linkEditor(i, l));
    fill(linkList, linkRows.map((r) => r.box));
  }

  function build() {
    inputs = [];
    linkRows = [];
    linksChanged = false;
    const sections = new Map();
    linkFields = fields.filter((f) => f.key.startsWith('link.*.'));
    for (const f of fields) {
      const sec = f.section || f.key.split('.')[0];
      if (!sections.has(sec)) sections.set(sec, []);
      if (!f.key.startsWith('link.*.')) sections.get(sec).push(f);
    }
    const general = h('p', { class: 'form-error', role: 'alert' });
    const saveBtn = h('button', { type: 'submit', class: 'btn primary', id: 'save-settings' }, 'Save');
    const resetBtn = h('button', { type: 'button', class: 'btn' }, 'Discard changes');
    resetBtn.addEventListener('click', () => load(false));
    const form = h('form', { class: 'settings', novalidate: true });
    for (const [sec, list] of sections) {
      const fs = h('fieldset', { class: 'card section', dataset: { section: sec } }, h('legend', null, sec));
      if (list.length) {
        const rows = list.map((f) => fieldInput(f, f.key, valueAt(values, f.key)));
        inputs.push(...rows);
        fs.append(h('div', { class: 'grid' }, rows.map((r) => r.wrap)));
      }
      if (linkFields.length && (linkFields[0].section || 'link') === sec) {
        linkList = h('div', { class: 'link-list' });
        const add = h('button', { type: 'button', class: 'btn small', id: 'add-link' }, 'Add link');
        add.addEventListener('click', () => {
          linksChanged = true;
          const cur = collectLinks();
          cur.push({});
          renderLinks(cur);
          linkRows[linkRows.length - 1].rows[0]?.input.focus();
        });
        fs.append(linkList, add);
        renderLinks(Array.isArray(values.link) ? values.link : []);
      }
      form.append(fs);
    }
    form.append(h('div', { class: 'save-bar' }, general, h('div', { class: 'row end' }, resetBtn, saveBtn)));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      await save(general, saveBtn);
    });
    fill(formBox, form);
  }

  function allRows() {
    return [...inputs, ...linkRows.flatMap((r) => r.rows)];
  }

  function clearErrors(general) {
    general.textContent = '';
    for (const r of allRows()) {
      r.err.textContent = '';
      r.input.removeAttribute('aria-invalid');
    }
  }

  function changes() {
    const out = {};
    const bad = [];
    for (const r of inputs) {
      const v = r.read();
      if (v === undefined) continue;
      if (typeof v === 'number' && !Number.isFinite(v)) {
        bad.push([r, 'not a number']);
        continue;
      }
      const before = baseline(r.f, valueAt(values, r.key));
      if (r.f.type === 'secret' && v === REDACTED) continue;
      if (JSON.stringify(v) !== JSON.stringify(before)) out[r.key] = v;
    }
    if (linksChanged) {
      for (const row of linkRows) {
        for (const r of row.rows) {
          const v = r.read();
          if (typeof v === 'number' && !Number.isFinite(v)) bad.push([r, 'not a number']);
        }
      }
      out.link = collectLinks();
    } else {
      for (const row of linkRows) {
        for (const r of row.rows) {
          const v = r.read();
          if (v === undefined) continue;
          if (typeof v === 'number' && !Number.isFinite(v)) {
            bad.push([r, 'not a number']);
            continue;
          }
          const before = baseline(r.f, valueAt(values, r.key));
          if (JSON.stringify(v) !== JSON.stringify(before)) out[r.key] = v;
        }
      }
    }
    return { out, bad };
  }

  function showFieldError(field, message) {
    const r = allRows().find((x) => x.key === field);
    if (!r) return false;
    r.err.textContent = message;
    r.input.setAttribute('aria-invalid', 'true');
    return true;
  }

  async function save(general, btn) {
    clearErrors(general);
    const { out, bad } = changes();
    if (bad.length) {
      for (const [r, m] of bad) showFieldError(r.key, m);
      bad[0][0].input.focus();
      return;
    }
    if (!Object.keys(out).length) {
      toast('Nothing changed');
      return;
    }
    btn.disabled = true;
    btn.textContent = 'Saving…';
    try {
      const r = await put('/api/settings', { revision, changes: out });
      revision = r.revision;
      values = r.values;
      const applied = (r.applied || []).length;
      toast(`Saved${applied ? `: ${applied} change${applied > 1 ? 's' : ''} applied now` : ''}`);
      build();
      setStatus();
      showRestart(r.restart_needed);
    } catch (e) {
      btn.disabled = false;
      btn.textContent = 'Save';
      if (e.status === 409) {
        toast('The settings were changed elsewhere; they are reloaded: make your changes again.', 'error');
        await load(false);
        status.textContent = 'The settings were changed elsewhere (another browser, or by hand) and have been reloaded. Your edits were not saved.';
        status.className = 'form-error';
        window.scrollTo(0, 0);
      } else if (e.status === 422 && Array.isArray(e.body?.errors)) {
        const loose = [];
        for (const fe of e.body.errors) if (!showFieldError(fe.field, fe.message)) loose.push(`${fe.field}: ${fe.message}`);
        general.textContent = `Not saved: ${e.body.errors.length} problem${e.body.errors.length > 1 ? 's' : ''}${loose.length ? ` (${loose.join('; ')})` : ' (see the fields marked)'}`;
        formBox.querySelector('[aria-invalid="true"]')?.focus();
      } else {
        general.textContent = `Not saved: ${reason(e)}`;
      }
    }
  }

  function setStatus() {
    status.className = 'muted';
    status.textContent = 'Changes are checked by the box before they are written. Fields marked "needs stream restart" take effect after "Restart stream".';
  }

  async function load(first) {
    try {
      const s = await get('/api/settings');
      if (!alive) return;
      revision = s.revision;
      values = s.values || {};
      fields = s.fields || [];
      build();
      setStatus();
      showRestart(s.restart_pending);
    } catch (e) {
      if (!alive) return;
      status.className = 'form-error';
      status.textContent = `Cannot load the settings: ${reason(e)}`;
      if (first) fill(formBox);
    }
  }

  load(true);
  return () => {
    alive = false;
  };
}
