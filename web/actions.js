// Actions: stream start/stop/restart, reboot, logs, diagnostics, password, update.

import { get, post, reason, upload } from './api.js';
import { h, fill, setText, toast, confirmDialog, usernameField } from './ui.js';

function busy(btn, label, fn) {
  return async () => {
    const was = btn.textContent;
    btn.disabled = true;
    btn.textContent = label;
    try {
      await fn();
    } finally {
      btn.disabled = false;
      btn.textContent = was;
    }
  };
}

export function renderActions(view, { feed }) {
  // Stream
  const streamState = h('p', { role: 'status' }, 'Stream: –');
  const startStop = h('button', { type: 'button', class: 'btn primary', id: 'start-stop' }, 'Start stream');
  const restart = h('button', { type: 'button', class: 'btn', id: 'restart' }, 'Restart stream');
  let live = null;
  startStop.addEventListener(
    'click',
    busy(startStop, '…', async () => {
      const want = !live;
      try {
        const r = await post(want ? '/api/stream/start' : '/api/stream/stop');
        live = r ? !!r.live : want;
        toast(live ? 'Stream started' : 'Stream stopped');
      } catch (e) {
        toast(`Failed: ${reason(e)}`, 'error');
      }
    }),
  );
  restart.addEventListener(
    'click',
    busy(restart, 'Restarting…', async () => {
      try {
        await post('/api/stream/restart');
        toast('Stream restarted with the saved settings');
      } catch (e) {
        toast(`Restart failed: ${reason(e)}`, 'error');
      }
    }),
  );
  const unsub = feed.subscribe((s) => {
    live = !!s.live;
    setText(streamState, `Stream: ${s.state || '–'}, ${live ? 'sending' : 'not sending'}`);
    if (!startStop.disabled) setText(startStop, live ? 'Stop stream' : 'Start stream');
    startStop.classList.toggle('danger', live);
    startStop.classList.toggle('primary', !live);
  });

  // Reboot
  const reboot = h('button', { type: 'button', class: 'btn danger', id: 'reboot' }, 'Reboot box…');
  reboot.addEventListener('click', async () => {
    const ok = await confirmDialog('Reboot the box?', 'The stream stops and the box is unreachable for about a minute.', 'Reboot');
    if (!ok) return;
    try {
      await post('/api/system/reboot', { confirm: true });
      toast('Rebooting: this page reconnects when the box is back');
    } catch (e) {
      toast(`Reboot failed: ${reason(e)}`, 'error');
    }
  });

  // Logs
  const logLines = h('select', { id: 'log-lines' }, [100, 200, 500, 2000].map((n) => h('option', { value: String(n), selected: n === 200 }, `${n} lines`)));
  const logBtn = h('button', { type: 'button', class: 'btn', id: 'load-logs' }, 'Show logs');
  const logSrc = h('p', { class: 'muted' });
  const logPre = h('pre', { class: 'logs', tabindex: '0', hidden: true, 'aria-label': 'Log lines' });
  logBtn.addEventListener(
    'click',
    busy(logBtn, 'Loading…', async () => {
      try {
        const r = await get(`/api/logs?lines=${encodeURIComponent(logLines.value)}`);
        setText(logSrc, r.source === 'journal' ? 'From the system journal' : "From braid's own recent lines (no journal)");
        logPre.textContent = (r.lines || []).join('\n') || '(no lines)';
        logPre.hidden = false;
        logPre.scrollTop = logPre.scrollHeight;
      } catch (e) {
        toast(`Cannot load logs: ${reason(e)}`, 'error');
      }
    }),
  );

  // Password
  const pwErr = h('p', { class: 'form-error', role: 'alert' });
  const pwField = (id, label, ac) => [h('label', { for: id }, label), h('input', { id, type: 'password', autocomplete: ac, minLength: 8, maxLength: 128, required: true })];
  const pwForm = h(
    'form',
    { class: 'stack', novalidate: true },
    usernameField(),
    pwField('pw-old', 'Current password', 'current-password'),
    pwField('pw-new', 'New password', 'new-password'),
    pwField('pw-new2', 'New password again', 'new-password'),
    pwErr,
    h('button', { type: 'submit', class: 'btn' }, 'Change password'),
  );
  pwForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    pwErr.textContent = '';
    const old = pwForm.querySelector('#pw-old').value;
    const nw = pwForm.querySelector('#pw-new').value;
    if (nw.length < 8 || nw.length > 128) return void (pwErr.textContent = 'The new password needs 8 to 128 characters.');
    if (nw !== pwForm.querySelector('#pw-new2').value) return void (pwErr.textContent = 'The two new passwords differ.');
    try {
      await post('/api/auth/password', { old, new: nw }, { quiet401: true });
      pwForm.reset();
      toast('Password changed; other sessions were logged out');
    } catch (err) {
      pwErr.textContent = err.status === 401 ? 'The current password is wrong.' : reason(err);
    }
  });

  // Software update: a signed bundle (.braidb) streamed to the box, which checks the
  // signature before writing anything, installs to the other slot and reboots when the
  // stream is idle (or now, with "force").
  const updFile = h('input', { type: 'file', id: 'update-file', accept: '.braidb,application/octet-stream', 'aria-describedby': 'update-note' });
  const updForce = h('input', { type: 'checkbox', id: 'update-force' });
  const updBar = h('progress', { id: 'update-progress', max: 100, value: 0, hidden: true });
  const updMsg = h('p', { class: 'muted', id: 'update-note', role: 'status' }, 'A signed update bundle. Nothing is written before its signature is checked; the box keeps the running version until the new one has started and passed its health check.');
  const updBtn = h('button', { type: 'submit', class: 'btn' }, 'Install update');
  const updForm = h(
    'form',
    { id: 'update-form' },
    h('label', { for: 'update-file' }, 'Update file'),
    updFile,
    h('div', { class: 'row' }, updForce, h('label', { for: 'update-force' }, 'Allow an older version and reboot at once, even while live')),
    updBar,
    updMsg,
    updBtn,
  );
  updForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const file = updFile.files && updFile.files[0];
    if (!file) return void (updMsg.textContent = 'Choose an update file first.');
    if (updForce.checked && !(await confirmDialog('Install and reboot now?', 'The box reboots as soon as the update is installed, even while live.', 'Install and reboot'))) return;
    updBtn.disabled = true;
    updBar.hidden = false;
    updBar.value = 0;
    updMsg.textContent = 'Uploading…';
    try {
      const r = await upload(updForce.checked ? '/api/update?force=1' : '/api/update', file, (sent, total) => {
        updBar.value = total ? Math.round((sent * 100) / total) : 0;
        updMsg.textContent = sent >= total ? 'Checking and installing…' : `Uploading ${Math.round(sent / 1e6)} of ${Math.round(total / 1e6)} MB`;
      });
      const i = (r && r.installed) || {};
      const when =
        i.reboot === 'now'
          ? 'the box reboots into it now'
          : i.reboot === 'never'
            ? 'it starts at the next reboot (the box does not reboot by itself)'
            : i.reboot === 'idle' || !i.reboot
              ? 'the box reboots into it when the stream is not live'
              : `the box reboots into it at ${i.reboot}, once the stream is not live`;
      updMsg.textContent = `Installed ${i.version || ''} into slot ${i.slot || '?'}; ${when}.`;
      toast('Update installed');
    } catch (err) {
      updMsg.textContent = `Not installed: ${reason(err)}`;
    } finally {
      updBtn.disabled = false;
    }
  });

  fill(
    view,
    h('h1', { class: 'sr-only' }, 'Actions'),
    h('section', { class: 'card', 'aria-labelledby': 'h-s' }, h('h2', { id: 'h-s' }, 'Stream'), streamState, h('div', { class: 'row' }, startStop, restart)),
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'h-l' },
      h('h2', { id: 'h-l' }, 'Logs'),
      h('div', { class: 'row' }, h('label', { for: 'log-lines', class: 'sr-only' }, 'How many lines'), logLines, logBtn),
      logSrc,
      logPre,
    ),
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'h-d' },
      h('h2', { id: 'h-d' }, 'Diagnostics'),
      h('p', { class: 'muted' }, 'Configuration (secrets removed), stats, logs and version in one file, for a bug report.'),
      h('a', { class: 'btn', href: '/api/diagnostics', download: 'braid-diagnostics.tar.gz', id: 'diagnostics' }, 'Download diagnostics'),
    ),
    h('section', { class: 'card', 'aria-labelledby': 'h-p' }, h('h2', { id: 'h-p' }, 'Admin password'), pwForm),
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'h-u' },
      h('h2', { id: 'h-u' }, 'Software update'),
      updForm,
    ),
    h('section', { class: 'card', 'aria-labelledby': 'h-r' }, h('h2', { id: 'h-r' }, 'Power'), h('div', { class: 'row' }, reboot)),
  );
  return unsub;
}
