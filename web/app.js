// Braid edge page: start-up, the password screens and the three tabs.

import * as api from './api.js';
import { h, fill, toast, usernameField } from './ui.js';
import { Feed, renderDashboard } from './dash.js';
import { renderSettings } from './settings.js';
import { renderActions } from './actions.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const pill = document.getElementById('state-pill');
const stale = document.getElementById('stale');

const TABS = [
  { id: 'dashboard', label: 'Dashboard', render: renderDashboard },
  { id: 'settings', label: 'Settings', render: renderSettings },
  { id: 'actions', label: 'Actions', render: renderActions },
];

// The stats feed lives as long as the session; screens subscribe to it.
const feed = new Feed();
let loggedIn = false;
let cleanup = null;

feed.subscribe((s) => {
  const state = s.state || 'booting';
  pill.hidden = false;
  pill.className = `pill st-${state}`;
  pill.textContent = state;
  pill.setAttribute('aria-label', `Stream state: ${state}`);
});
feed.onStale((isStale) => {
  stale.hidden = !isStale;
});

api.setUnauthorizedHandler(() => {
  if (!loggedIn) return;
  loggedIn = false;
  api.setCsrf(null);
  feed.stop();
  toast('Session ended: please log in again', 'error');
  showLogin();
});

let firstScreen = true;

/** Marks the first real screen drawn (tests/browser/weight.mjs reads the mark). */
function drawn() {
  if (firstScreen && typeof performance.mark === 'function') performance.mark('braid-first-screen');
  firstScreen = false;
}

function leaveScreen() {
  if (cleanup) cleanup();
  cleanup = null;
}

function setNav(visible) {
  nav.hidden = !visible;
  document.getElementById('logout').hidden = !visible;
  if (!visible) pill.hidden = true;
}

function passwordInput(id, label, autocomplete) {
  return [
    h('label', { for: id }, label),
    h('input', {
      id,
      name: id,
      type: 'password',
      required: true,
      minLength: 8,
      maxLength: 128,
      autocomplete,
    }),
  ];
}

function authCard(title, intro, fields, submitLabel, onSubmit) {
  const err = h('p', { class: 'form-error', role: 'alert' });
  const btn = h('button', { type: 'submit', class: 'btn primary' }, submitLabel);
  const form = h(
    'form',
    { class: 'card auth', novalidate: true },
    h('h1', null, title),
    intro ? h('p', { class: 'muted' }, intro) : null,
    usernameField(),
    fields,
    err,
    btn,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.textContent = '';
    btn.disabled = true;
    try {
      await onSubmit(form, (msg) => {
        err.textContent = msg;
      });
    } finally {
      btn.disabled = false;
    }
  });
  return form;
}

function showSetup() {
  leaveScreen();
  setNav(false);
  const form = authCard(
    'Set the admin password',
    'This box has no password yet. Choose one (8 to 128 characters); it is asked for on every visit.',
    [
      passwordInput('setup-pw', 'New password', 'new-password'),
      passwordInput('setup-pw2', 'New password again', 'new-password'),
    ],
    'Set password',
    async (f, fail) => {
      const pw = f.querySelector('#setup-pw').value;
      const pw2 = f.querySelector('#setup-pw2').value;
      if (pw.length < 8 || pw.length > 128) return fail('The password needs 8 to 128 characters.');
      if (pw !== pw2) return fail('The two passwords differ.');
      try {
        const r = await api.post('/api/auth/setup', { password: pw }, { quiet401: true });
        enter(r.csrf);
      } catch (e) {
        if (e.status === 409) {
          toast('A password was already set: log in', 'info');
          showLogin();
        } else fail(api.reason(e));
      }
    },
  );
  fill(main, form);
  drawn();
  form.querySelector('input').focus();
}

function showLogin() {
  leaveScreen();
  setNav(false);
  const form = authCard(
    'Log in',
    null,
    [passwordInput('login-pw', 'Admin password', 'current-password')],
    'Log in',
    async (f, fail) => {
      const pw = f.querySelector('#login-pw').value;
      try {
        const r = await api.post('/api/auth/login', { password: pw }, { quiet401: true });
        enter(r.csrf);
      } catch (e) {
        if (e.status === 401) fail('Wrong password.');
        else if (e.status === 429) {
          const wait = e.headers.get('Retry-After');
          fail(`Too many attempts: try again in ${wait || 'a few'} seconds.`);
        } else fail(api.reason(e));
      }
    },
  );
  fill(main, form);
  drawn();
  form.querySelector('input').focus();
}

function enter(csrf) {
  api.setCsrf(csrf);
  loggedIn = true;
  setNav(true);
  feed.start();
  if (!location.hash || location.hash === '#') location.hash = '#dashboard';
  route();
}

function route() {
  if (!loggedIn) return;
  const id = (location.hash || '#dashboard').slice(1);
  const tab = TABS.find((t) => t.id === id) || TABS[0];
  for (const a of nav.querySelectorAll('a')) {
    if (a.dataset.tab === tab.id) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  leaveScreen();
  window.scrollTo(0, 0);
  const view = h('section', { class: `view view-${tab.id}`, 'aria-label': tab.label });
  fill(main, view);
  cleanup = tab.render(view, { feed, api }) || null;
  drawn();
}

async function logout() {
  try {
    await api.post('/api/auth/logout');
  } catch {
    // logged out either way
  }
  loggedIn = false;
  api.setCsrf(null);
  feed.stop();
  showLogin();
}

async function boot() {
  fill(
    nav,
    TABS.map((t) => h('a', { href: `#${t.id}`, dataset: { tab: t.id } }, t.label)),
  );
  document.getElementById('logout').addEventListener('click', logout);
  window.addEventListener('hashchange', route);
  let auth;
  for (let attempt = 0; ; attempt++) {
    try {
      auth = await api.get('/api/auth', { quiet401: true });
      break;
    } catch (e) {
      fill(main, h('p', { class: 'card' }, `Cannot reach the box (${api.reason(e)}); retrying…`));
      await new Promise((r) => setTimeout(r, Math.min(1000 * 2 ** attempt, 8000)));
    }
  }
  if (!auth.password_set) showSetup();
  else if (!auth.logged_in) showLogin();
  else enter(auth.csrf);
}

boot();
