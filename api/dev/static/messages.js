// The development Messages page: plain JavaScript, no build step. It polls /dev/api/inbox once a second
// (on Supabase the web app would use Realtime on the same tables) and calls one /dev/api route per
// action; each route runs the app-facing RPCs as the signed-in demo user.
'use strict';

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;',
  '"': '&quot;', "'": '&#39;'}[c]));
const POLL_MS = 1000;
const IMAGE_TYPES = new Set(['image', 'story_mention', 'sticker', 'animated_image']);

const state = {
  data: null, // the last /dev/api/inbox answer
  fetchedAt: 0, // performance.now() when it came (the countdowns run from the server's "now")
  selected: null, // the open conversation's id
  pending: [], // messages the send RPC returned that the next poll may not list yet
  lastRendered: '',
  inserted: null, // {id, text}: the template just inserted (scheduled as the template while unchanged)
  markingRead: new Set(),
};

// ---- small helpers --------------------------------------------------------------------------------

async function call(method, path, body) {
  const response = await fetch(path, {method, credentials: 'same-origin',
    headers: body === undefined ? {} : {'Content-Type': 'application/json'},
    body: body === undefined ? undefined : JSON.stringify(body)});
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    const error = new Error(data && data.error ? data.error.message : `HTTP ${response.status}`);
    error.code = data && data.error ? data.error.code : 'http_error';
    throw error;
  }
  return data;
}

function uuid() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function now() { // the server's clock, moved on by the time since the last answer
  if (!state.data) return Date.now();
  return Date.parse(state.data.now) + (performance.now() - state.fetchedAt);
}

function span(ms) { // 25 min, 13 h, 60 d
  const minutes = Math.max(0, Math.round(ms / 60000));
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h`;
  return `${Math.floor(hours / 24)} d`;
}

function shortTime(iso) {
  if (!iso) return '';
  const t = new Date(iso);
  const age = now() - t.getTime();
  if (age < 60000) return 'now';
  if (age < 86400000) return t.toLocaleTimeString([], {hour: '2-digit', minute: '2-digit'});
  return t.toLocaleDateString([], {month: 'short', day: 'numeric'});
}

function longTime(iso) {
  return new Date(iso).toLocaleString([], {weekday: 'short', month: 'short', day: 'numeric',
    hour: '2-digit', minute: '2-digit'});
}

function flash(text, bad) {
  const f = $('flash');
  f.textContent = text; f.hidden = false; f.classList.toggle('bad', !!bad);
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { f.hidden = true; }, 6000);
}

function initials(name) {
  return esc(String(name || '?').split(/[\s._]+/).filter(Boolean).slice(0, 2).map((w) => w[0]).join('').toUpperCase());
}

function avatar(participant) {
  const p = participant || {};
  const label = initials(p.name || p.username || p.igsid);
  if (!p.profile_picture_url) return `<span class="avatar" aria-hidden="true">${label}</span>`;
  return `<span class="avatar" aria-hidden="true"><img alt="" src="${esc(p.profile_picture_url)}"></span>`;
}

// ---- media: the one place an attachment's address is chosen ----------------------------------------

// Every attachment shown on the page gets its URL here. For now it is the attachment's own URL (Meta's
// CDN; the sandbox in development); the signed URL of our stored copy (instagram_media_url) replaces it.
function attachmentUrl(message, index, attachment) {
  // Our stored copy once the worker has it (instagram_media_url, as the user); Meta's link until then,
  // nothing once Meta's copy was gone before we got it.
  const media = attachment.media || {};
  if (media.status === 'stored') return `/dev/media/${encodeURIComponent(message.id)}?index=${index}`;
  if (media.status === 'unavailable' || media.status === 'expired') return null;
  const payload = attachment.payload || {};
  return payload.url || attachment.url || null;
}

function attachmentView(message, index, attachment) {
  const url = attachmentUrl(message, index, attachment);
  const type = attachment.type || 'file';
  const caption = type === 'story_mention' ? 'Mentioned you in their story' : type.replace('_', ' ');
  if (!url) return `<div class="attachment caption">${esc(caption)} (no longer available)</div>`;
  if (IMAGE_TYPES.has(type)) {
    return `<div class="attachment"><a href="${esc(url)}" target="_blank" rel="noopener">` +
      `<img alt="${esc(caption)}" src="${esc(url)}"></a><div class="caption">${esc(caption)}</div></div>`;
  }
  return `<div class="attachment"><a href="${esc(url)}" target="_blank" rel="noopener">${esc(caption)} ↗</a></div>`;
}

// ---- rendering ------------------------------------------------------------------------------------

function access() { return state.data ? state.data.access : null; }

function selectedConversation() {
  return state.data ? state.data.conversations.find((c) => c.id === state.selected) || null : null;
}

function renderAccounts() {
  const data = state.data;
  const isAdmin = data.access.is_admin;
  const rows = data.accounts.filter((a) => a.status !== 'disconnected');
  const parts = [];
  for (const a of rows.filter((r) => r.status === 'reauth_required')) {
    parts.push(`<div class="banner" data-reauth="${esc(a.id)}">Instagram asks you to reconnect ` +
      `<strong>@${esc(a.instagram_username)}</strong>${a.last_error_message ? `: ${esc(a.last_error_message)}` : ''}. ` +
      (isAdmin ? `<button type="button" class="link" data-connect="${esc(a.provider || 'facebook_login')}">Reconnect</button>`
        : 'Ask an admin of your agency to reconnect it.') + '</div>');
  }
  for (const a of rows) {
    const chip = a.status === 'connected' ? 'ok' : a.status === 'reauth_required' ? 'warn' : 'bad';
    const expiry = a.token_expires_at
      ? `token expires in ${span(Date.parse(a.token_expires_at) - now())}` : 'token does not expire';
    const access = a.data_access_expires_at
      ? ` · data access ${span(Date.parse(a.data_access_expires_at) - now())}` : '';
    parts.push(`<div class="account" data-account="${esc(a.id)}">` +
      `<span class="avatar" aria-hidden="true">${initials(a.instagram_username)}</span>` +
      `<div class="meta"><div><strong>@${esc(a.instagram_username)}</strong> ` +
      `<span class="chip ${chip}" data-status="${esc(a.status)}">${esc(a.status.replace('_', ' '))}</span></div>` +
      `<div class="small muted">${esc(a.facebook_page_name || '')}</div>` +
      `<div class="small muted" data-expiry title="renewed automatically before it lapses">${esc(expiry + access)}</div></div>` +
      (isAdmin ? `<button type="button" class="danger small" data-disconnect="${esc(a.id)}">Disconnect</button>` : '') +
      '</div>');
  }
  if (!rows.length) {
    parts.push(`<div class="muted small">No Instagram account connected${isAdmin ? '' : ' yet; an admin can connect one'}.</div>`);
  }
  if (isAdmin) {
    parts.push('<button type="button" class="primary" data-connect="facebook_login" id="connect">Connect Instagram</button>');
    if (data.providers.includes('instagram_login')) {
      // An Instagram professional account without a Facebook Page (Instagram API with Instagram Login).
      parts.push(' <button type="button" data-connect="instagram_login" id="connect-ig">Connect with Instagram Login (no Page)</button>');
    }
  }
  return parts.join('');
}

function renderConversation(c) {
  const p = c.participant || {};
  const name = p.name || p.username || `Instagram user ${String(p.igsid).slice(-4)}`;
  const unread = c.unread_count > 0;
  return `<li class="conversation${unread ? ' unread' : ''}${c.id === state.selected ? ' selected' : ''}" ` +
    `data-conversation="${esc(c.id)}" tabindex="0">${avatar(p)}<div class="body">` +
    `<div class="line"><span class="name">${esc(name)}</span><span class="small muted">${esc(shortTime(c.last_message_at))}</span></div>` +
    `<div class="line"><span class="small muted username">${p.username ? '@' + esc(p.username) : ''}</span>` +
    (c.recruiting_lead_id ? `<span class="lead" title="recruiting lead ${esc(c.recruiting_lead_id)}">● lead</span>` : '') + '</div>' +
    `<div class="line"><span class="preview">${esc(c.last_message_preview || '')}</span>` +
    (unread ? `<span class="badge" data-unread="${esc(c.unread_count)}">${esc(c.unread_count)}</span>` : '') +
    '</div></div></li>';
}

const STATUS_LABELS = {queued: 'Queued', sending: 'Sending…', sent: '✓ Sent', delivered: '✓✓ Delivered',
  read: '✓✓ Read', failed: 'Not sent'};

function renderMessage(m) {
  const out = m.direction === 'outbound';
  const classes = `msg ${out ? 'outbound' : 'inbound'}${m.status === 'failed' ? ' failed' : ''}`;
  let bubble;
  if (m.deleted) {
    bubble = '<div class="bubble unsent">This message was unsent</div>';
  } else {
    const media = (m.attachments || []).map((a, i) => attachmentView(m, i, a)).join('');
    const text = m.text ? `<div>${esc(m.text)}</div>` : '';
    bubble = `<div class="bubble">${text}${media || (text ? '' : `<span class="small">(${esc(m.message_type)})</span>`)}</div>`;
  }
  const reactions = (m.reactions || []).length
    ? `<div class="reactions" title="reactions">${(m.reactions).map((r) => esc(r.emoji || r.reaction)).join(' ')}</div>` : '';
  let status = '';
  if (out && m.status === 'failed') {
    status = `<div class="failure" data-failure><span>Not sent: ${esc(m.error_message || m.error_code || 'unknown error')}` +
      `${m.error_code ? ` (${esc(m.error_code)})` : ''}</span>` +
      `<button type="button" class="small" data-retry="${esc(m.id)}">Retry</button></div>`;
  } else if (out) {
    status = `<div class="status ${esc(m.status)}">${esc(STATUS_LABELS[m.status] || m.status)} · ${esc(shortTime(m.sent_at))}</div>`;
  } else {
    status = `<div class="status">${esc(shortTime(m.sent_at))}${m.edit_count ? ' · edited' : ''}</div>`;
  }
  return `<li class="${classes}" data-message="${esc(m.id)}" data-status="${esc(m.status)}">${bubble}${reactions}${status}</li>`;
}

function windowState(c) {
  const t = now();
  if (!c.window_closes_at) return {kind: 'closed', text: 'You can reply once the prospect writes to you.'};
  const closes = Date.parse(c.window_closes_at);
  const human = Date.parse(c.human_agent_until);
  if (t < closes) return {kind: 'open', text: `You can reply for ${span(closes - t)}.`};
  if (t < human) {
    const until = longTime(c.human_agent_until);
    return {kind: 'human', text: state.data.human_agent_enabled
      ? `Outside the 24-hour window — Meta allows a human reply until ${until}.`
      : `Outside the 24-hour window — Meta allows a human reply until ${until}, with the Human Agent ` +
        'feature, which is off here (INSTAGRAM_HUMAN_AGENT_ENABLED).'};
  }
  return {kind: 'closed', text: 'You can no longer reply: the prospect last wrote more than 7 days ago.'};
}

function renderThread() {
  const c = selectedConversation();
  $('thread-empty').hidden = !!c;
  $('thread-inner').hidden = !c;
  document.body.classList.toggle('show-thread', !!c);
  if (!c) return;
  const p = c.participant || {};
  $('thread-avatar').outerHTML = avatar(p).replace('class="avatar"', 'class="avatar" id="thread-avatar"');
  $('thread-name').textContent = p.name || p.username || `Instagram user ${String(p.igsid).slice(-4)}`;
  $('thread-username').textContent = p.username ? `@${p.username}` : '';
  $('thread-lead').innerHTML = c.recruiting_lead_id
    ? `<span class="lead">● Recruiting lead</span> <span class="muted">${esc(c.recruiting_lead_id.slice(0, 8))}</span>` : '';
  const listed = new Set(state.data.messages.map((m) => m.id));
  state.pending = state.pending.filter((m) => !listed.has(m.id) && m.conversation_id === c.id);
  const messages = [...state.data.messages].reverse().concat(state.pending);
  const list = $('messages');
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.innerHTML = messages.map(renderMessage).join('') || '<li class="day">No messages yet.</li>';
  if (atBottom || renderThread.last !== c.id) list.scrollTop = list.scrollHeight;
  renderThread.last = c.id;
  renderScheduled();
  const win = windowState(c);
  const note = $('window-note');
  note.textContent = win.text;
  note.className = `window-note ${win.kind}`;
  note.dataset.window = win.kind;
  const closed = win.kind === 'closed';
  for (const id of ['reply', 'send', 'template', 'schedule', 'schedule-when']) $(id).disabled = closed;
  renderTemplates();
}

const SCHEDULED_LABELS = {scheduled: 'Scheduled', sending: 'Going out', failed: 'Failed', sent: 'Sent',
  cancelled: 'Cancelled'};

function renderScheduled() {
  const rows = state.data.scheduled || [];
  const list = $('scheduled');
  list.hidden = rows.length === 0;
  list.innerHTML = rows.map((s) => {
    const what = s.text || (state.data.templates.find((t) => t.id === s.template_id) || {}).name || 'template';
    const failure = s.status === 'failed' ? ` — ${esc(s.error_message || s.error_code)}` : '';
    const actions = s.status === 'scheduled' || s.status === 'failed'
      ? `<button type="button" class="small" data-reschedule="${esc(s.id)}" data-at="${esc(s.send_at)}">+1 h</button>` +
        (s.status === 'scheduled' ? `<button type="button" class="small danger" data-cancel="${esc(s.id)}">Cancel</button>` : '')
      : '';
    return `<li data-scheduled="${esc(s.id)}" data-status="${esc(s.status)}">` +
      `<span class="chip ${s.status === 'failed' ? 'bad' : 'warn'}">${esc(SCHEDULED_LABELS[s.status] || s.status)}</span>` +
      `<span class="small">${esc(longTime(s.send_at))}</span><span class="what">${esc(what)}${failure}</span>${actions}</li>`;
  }).join('');
}

function scheduleTime() {
  const choice = $('schedule-when').value;
  if (choice === 'custom') {
    const value = $('schedule-at').value;
    return value ? new Date(value) : null;
  }
  if (choice === 'tomorrow') {
    const t = new Date(now()); t.setDate(t.getDate() + 1); t.setHours(9, 0, 0, 0);
    return t;
  }
  return new Date(now() + Number(choice) * 1000);
}

async function schedule() {
  const c = selectedConversation();
  const text = $('reply').value.trim();
  const error = $('composer-error');
  error.hidden = true;
  const at = scheduleTime();
  if (!c || !text || !at) return;
  const body = {conversation_id: c.id, send_at: at.toISOString()};
  if (state.inserted && state.inserted.text === $('reply').value) body.template_id = state.inserted.id;
  else body.text = text;
  try {
    await call('POST', '/dev/api/schedule', body);
    $('reply').value = ''; state.inserted = null;
    flash(`Scheduled for ${longTime(at.toISOString())}.`);
    refresh();
  } catch (e) {
    error.textContent = `Not scheduled: ${e.message}`;
    error.dataset.code = e.code;
    error.hidden = false;
  }
}

function renderTemplates() {
  const select = $('template');
  const templates = state.data.templates;
  const key = templates.map((t) => t.id + t.name).join();
  if (select.dataset.key !== key) {
    select.innerHTML = `<option value="">${templates.length ? 'Insert a template…' : 'No templates yet'}</option>` +
      templates.map((t) => `<option value="${esc(t.id)}">${esc(t.name)}</option>`).join('');
    select.dataset.key = key;
  }
  $('add-templates').hidden = !(state.data.access.is_admin && templates.length === 0);
}

function render() {
  const data = state.data;
  $('imo-name').textContent = data.access.imo_name;
  $('who').hidden = false;
  $('who-name').textContent = data.user.name;
  $('who-role').textContent = data.access.role;
  $('signin').hidden = true;
  if (!data.access.instagram_messaging) {
    $('app').hidden = true;
    $('upgrade').hidden = false;
    $('upgrade-imo').textContent = data.access.imo_name;
    $('upgrade-plan').textContent = data.access.plan || 'no';
    return;
  }
  $('upgrade').hidden = true;
  $('app').hidden = false;
  // Re-render the lists only when something changed (keeps hover, focus and scroll steady).
  const key = JSON.stringify([data.accounts, data.conversations, data.messages, data.templates, data.scheduled,
    state.selected,
    state.pending, Math.floor(now() / 60000)]);
  if (key === state.lastRendered) return;
  state.lastRendered = key;
  $('accounts').innerHTML = renderAccounts();
  $('conversations').innerHTML = data.conversations.map(renderConversation).join('') ||
    '<li class="empty-list">No conversations yet. Use the sandbox panel: "A prospect sends a DM".</li>';
  const u = data.usage;
  $('usage').textContent = u ? `${u.messages_sent} sent this month · ${u.remaining} left` : '';
  renderThread();
}

// ---- loading --------------------------------------------------------------------------------------

async function refresh() {
  if (refresh.busy) return;
  refresh.busy = true;
  try {
    const query = state.selected ? `?conversation_id=${encodeURIComponent(state.selected)}` : '';
    const data = await call('GET', `/dev/api/inbox${query}`);
    state.data = data; state.fetchedAt = performance.now();
    render();
    markOpenRead();
  } catch (e) {
    if (e.code === 'not_signed_in') { stop(); showSignIn(); } else { flash(e.message, true); }
  } finally {
    refresh.busy = false;
  }
}

function markOpenRead() {
  const c = selectedConversation();
  if (!c || c.unread_count === 0 || state.markingRead.has(c.id)) return;
  state.markingRead.add(c.id);
  call('POST', '/dev/api/read', {conversation_id: c.id})
    .then(() => { c.unread_count = 0; state.lastRendered = ''; render(); })
    .catch((e) => flash(e.message, true))
    .finally(() => state.markingRead.delete(c.id));
}

let timer = null;
function start() { if (!timer) { refresh(); timer = setInterval(refresh, POLL_MS); } }
function stop() { clearInterval(timer); timer = null; }

async function showSignIn() {
  const session = await call('GET', '/dev/session');
  $('app').hidden = true; $('upgrade').hidden = true; $('who').hidden = true;
  $('signin').hidden = false;
  $('signin-cards').innerHTML = session.users.map((u) =>
    `<button type="button" data-user="${esc(u.key)}"><strong>${esc(u.name)}</strong>` +
    `<span class="small muted">${esc(u.email)}</span><span class="small">${esc(u.blurb)}</span></button>`).join('');
}

// ---- actions --------------------------------------------------------------------------------------

async function connect(provider) {
  const session = await call('GET', '/dev/session/token');
  const response = await fetch('/functions/v1/instagram-oauth-init', {method: 'POST', credentials: 'include',
    headers: {'Authorization': `Bearer ${session.access_token}`, 'Content-Type': 'application/json'},
    body: JSON.stringify({imo_id: session.imo_id, provider, return_to: `${location.origin}/dev`})});
  const data = await response.json();
  if (!response.ok) throw new Error(data.error.message);
  window.location.assign(data.url); // Meta's dialog (the sandbox's consent page)
}

async function send(event) {
  event.preventDefault();
  const c = selectedConversation();
  const text = $('reply').value.trim();
  const error = $('composer-error');
  error.hidden = true;
  if (!c || !text) return;
  $('send').disabled = true;
  try {
    const message = await call('POST', '/dev/api/send', {conversation_id: c.id, text, client_message_id: uuid()});
    state.pending.push({...message, conversation_id: c.id});
    $('reply').value = '';
    state.lastRendered = ''; render();
  } catch (e) {
    error.textContent = `Not sent: ${e.message}`;
    error.dataset.code = e.code;
    error.hidden = false;
  } finally {
    $('send').disabled = false;
  }
}

async function sandbox(path, body, label, webhook = true) {
  const out = $('sb-out');
  out.textContent = `${label}…`;
  try {
    await call('POST', path, body);
    out.textContent = webhook ? `${label}: it shows up here once the worker has processed the webhook.` : `${label}.`;
  } catch (e) {
    out.textContent = `${label}: ${e.message}`;
  }
}

async function outageState() {
  try {
    const s = await call('GET', '/dev/sandbox/outage');
    $('sb-outage').textContent = s.outage ? 'End the Meta outage' : 'Start a Meta outage';
    $('sb-outage').dataset.on = s.outage ? '1' : '';
    $('sb-outage-state').textContent = s.outage ? 'Meta answers every Graph call with a 500.' : '';
  } catch (e) { /* the sandbox may be down: the panel says so on use */ }
}

document.addEventListener('click', async (event) => {
  const target = event.target.closest('button, li[data-conversation]');
  if (!target) return;
  try {
    if (target.dataset.user) {
      await call('POST', '/dev/session', {user: target.dataset.user});
      state.selected = null; state.lastRendered = ''; start(); outageState();
    } else if (target.id === 'sign-out') {
      stop(); await call('DELETE', '/dev/session'); state.data = null; showSignIn();
    } else if (target.dataset.connect) {
      await connect(target.dataset.connect);
    } else if (target.dataset.disconnect) {
      if (target.dataset.confirm) {
        await call('POST', '/dev/api/disconnect', {integration_id: target.dataset.disconnect});
        flash('Disconnected: the tokens are wiped and the Page is unsubscribed from webhooks.');
        state.lastRendered = ''; refresh();
      } else {
        target.dataset.confirm = '1'; target.textContent = 'Confirm disconnect';
      }
    } else if (target.dataset.conversation) {
      state.selected = target.dataset.conversation;
      state.pending = []; $('composer-error').hidden = true;
      state.lastRendered = ''; render(); refresh();
    } else if (target.dataset.retry) {
      const message = await call('POST', '/dev/api/retry', {message_id: target.dataset.retry});
      state.pending.push({...message, conversation_id: state.selected});
      state.lastRendered = ''; render();
    } else if (target.id === 'schedule') {
      await schedule();
    } else if (target.dataset.cancel) {
      await call('POST', '/dev/api/scheduled/cancel', {id: target.dataset.cancel}); refresh();
    } else if (target.dataset.reschedule) {
      const base = Math.max(Date.parse(target.dataset.at), now());
      await call('POST', '/dev/api/scheduled/reschedule',
        {id: target.dataset.reschedule, send_at: new Date(base + 3600000).toISOString()});
      refresh();
    } else if (target.id === 'back') {
      state.selected = null; state.lastRendered = ''; render();
    } else if (target.id === 'add-templates') {
      await call('POST', '/dev/api/templates/samples', {}); refresh();
    } else if (target.id === 'sb-dm') {
      const who = $('sb-person').value;
      const body = {kind: $('sb-kind').value, text: $('sb-text').value, hours_ago: Number($('sb-ago').value)};
      if (who === 'open' && state.selected) body.conversation_id = state.selected;
      else body.person = who === 'open' ? 1 : Number(who);
      await sandbox('/dev/sandbox/dm', body, 'DM sent by the sandbox');
    } else if (target.id === 'sb-read') {
      await sandbox('/dev/sandbox/read', {conversation_id: state.selected}, 'Read receipt sent');
    } else if (target.id === 'sb-react') {
      await sandbox('/dev/sandbox/react', {conversation_id: state.selected}, 'Reaction sent');
    } else if (target.id === 'sb-refuse') {
      await sandbox('/dev/sandbox/refuse-next', {}, 'The next reply will be refused (Meta error 551)', false);
    } else if (target.id === 'sb-outage') {
      await sandbox('/dev/sandbox/outage', {on: !target.dataset.on},
        target.dataset.on ? 'Meta is back' : 'Meta is down: sends wait and retry', false);
      outageState();
    }
  } catch (e) {
    flash(e.message, true);
  }
});

$('composer').addEventListener('submit', send);
$('template').addEventListener('change', async (event) => {
  const id = event.target.value;
  if (!id || !state.selected) return;
  try {
    const rendered = await call('POST', '/dev/api/render', {template_id: id, conversation_id: state.selected});
    $('reply').value = rendered.text;
    state.inserted = {id, text: rendered.text};
    $('reply').focus();
  } catch (e) {
    $('composer-error').textContent = e.message; $('composer-error').hidden = false;
  }
  event.target.value = '';
});
$('schedule-when').addEventListener('change', (event) => {
  $('schedule-at').hidden = event.target.value !== 'custom';
});
$('reply').addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && (event.metaKey || event.ctrlKey)) $('composer').requestSubmit();
});

(async function boot() {
  const params = new URLSearchParams(location.search);
  if (params.get('instagram') === 'connected') flash('Instagram connected.');
  if (params.get('instagram') === 'error') flash(`Instagram was not connected: ${params.get('reason')}.`, true);
  if (params.has('instagram')) history.replaceState(null, '', location.pathname);
  const session = await call('GET', '/dev/session');
  if (session.user) { start(); outageState(); } else { showSignIn(); }
})();
