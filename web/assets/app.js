// Flowline chat client: vanilla JavaScript, no dependencies. Speaks the node's HTTP API
// (/api/v1) and WebSocket protocol (/ws), documented in docs/protocol.md.
//
// Safety rule: user-provided text reaches the DOM only through textContent, attribute
// setters, or renderMarkdown(), which HTML-escapes its whole input before adding its own
// tags. Nothing else ever assigns innerHTML.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);

  /** Build an element: el('div', {class: 'x', onclick: f}, 'text', child, ...). */
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (k === 'class') e.className = v;
      else if (k === 'dataset') Object.assign(e.dataset, v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const k of kids.flat()) {
      if (k === undefined || k === null || k === false) continue;
      e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
    return e;
  }

  // ---------------------------------------------------------------- markdown (safe)
  const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
  /** HTML-escape text (also quotes, so it is safe inside attribute values). */
  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, (c) => ESC[c]);
  }
  function inlineMd(escaped) {
    // Code spans are taken verbatim; formatting applies to the rest.
    return escaped.split(/(`[^`\n]+`)/).map((p, i) => {
      if (i % 2) return '<code>' + p.slice(1, -1) + '</code>';
      return p
        .replace(/\*\*([^*\n]+)\*\*/g, '<strong>$1</strong>')
        .replace(/(^|[^*\w])\*([^*\n]+)\*(?!\w)/g, '$1<em>$2</em>')
        .replace(/(^|[^_\w])_([^_\n]+)_(?!\w)/g, '$1<em>$2</em>')
        .replace(/~~([^~\n]+)~~/g, '<del>$1</del>')
        // Only http(s) links; the URL was escaped with the rest, quotes included.
        .replace(/\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\)/g,
          '<a href="$2" rel="noopener noreferrer nofollow" target="_blank">$1</a>');
    }).join('');
  }
  /** Render a markdown subset to HTML. The input is escaped first: safe for innerHTML. */
  function renderMarkdown(src) {
    const lines = escapeHtml(src).split('\n');
    const out = [];
    let para = [], list = [], quote = [], code = null;
    const flush = () => {
      if (para.length) out.push('<p>' + para.map(inlineMd).join('<br>') + '</p>');
      if (list.length) out.push('<ul>' + list.map((l) => '<li>' + inlineMd(l) + '</li>').join('') + '</ul>');
      if (quote.length) out.push('<blockquote>' + quote.map(inlineMd).join('<br>') + '</blockquote>');
      para = []; list = []; quote = [];
    };
    for (const line of lines) {
      if (code !== null) {
        if (line.trim().startsWith('```')) { out.push('<pre><code>' + code.join('\n') + '</code></pre>'); code = null; }
        else code.push(line);
        continue;
      }
      if (line.trim().startsWith('```')) { flush(); code = []; continue; }
      const q = line.match(/^&gt; ?(.*)$/);
      const li = line.match(/^\s*[-*] (.*)$/);
      if (q) { if (para.length || list.length) flush(); quote.push(q[1]); }
      else if (li) { if (para.length || quote.length) flush(); list.push(li[1]); }
      else if (line.trim() === '') flush();
      else { if (list.length || quote.length) flush(); para.push(line); }
    }
    if (code !== null) out.push('<pre><code>' + code.join('\n') + '</code></pre>');
    flush();
    return out.join('');
  }

  // ---------------------------------------------------------------- state
  const S = {
    token: sessionStorage.getItem('flowline.token'),
    me: null,
    spaces: [],
    members: new Map(), // space id -> [user]
    channels: new Map(), // channel id -> {id, name, kind, space, thread?: {channel, id}}
    users: new Map(), // user id -> username
    presence: new Map(), // user id -> {status, custom}
    chans: new Map(), // channel id -> per-channel message state (see chan())
    subscribed: new Set(),
    current: null,
    thread: null, // open thread: {channel (thread channel), parent: {channel, id}}
    pending: new Map(), // nonce -> {req, channel, op, state, error}
    reqs: new Map(), // req_id -> {type, ...}
    typing: new Map(), // channel id -> Map(user id -> expiry ms)
    myReactions: new Set(), // `${channel}:${id}:${emoji}`
    ws: null,
    conn: 'offline', // offline | connecting | ready | reconnecting
    attempt: 0,
    everReady: false,
    nextReq: 1,
    nonceSeq: 0,
    compose: { ref: null, attachments: [] },
    lastTypingSent: 0,
    pingTimer: null,
    awaitingPong: null,
  };

  function chan(id) {
    let c = S.chans.get(id);
    if (!c) {
      // msgs: seq -> message; byId: message id -> seq; last: highest seq seen (the
      // resume point); oldest: lowest seq loaded; start: no older history exists.
      c = { msgs: new Map(), byId: new Map(), last: null, oldest: null, loaded: false, loading: false, start: false, unread: 0 };
      S.chans.set(id, c);
    }
    return c;
  }

  const userName = (id) => S.users.get(id) || ('user ' + id);
  const channelLabel = (id) => {
    const ch = S.channels.get(id);
    if (!ch) return 'channel ' + id;
    if (ch.kind === 'dm') return '@' + (ch.partner ? userName(ch.partner) : 'direct message ' + id);
    if (ch.kind === 'thread') return 'thread ' + id;
    return '#' + ch.name;
  };

  // ---------------------------------------------------------------- HTTP API
  async function api(method, path, body) {
    const headers = {};
    if (S.token) headers.Authorization = 'Bearer ' + S.token;
    let payload;
    if (body instanceof FormData) payload = body;
    else if (body !== undefined) { headers['Content-Type'] = 'application/json'; payload = JSON.stringify(body); }
    let resp;
    try {
      resp = await fetch('/api/v1' + path, { method, headers, body: payload });
    } catch (e) {
      throw new Error('the node does not answer (' + e.message + ')');
    }
    const text = await resp.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!resp.ok) {
      const err = new Error((data && data.message) || ('HTTP ' + resp.status));
      err.status = resp.status;
      err.code = data && data.code;
      throw err;
    }
    return data;
  }

  // ---------------------------------------------------------------- log in
  function showLogin(message) {
    closeSocket();
    S.token = null;
    sessionStorage.removeItem('flowline.token');
    $('app-view').hidden = true;
    $('login-view').hidden = false;
    $('login-error').textContent = message || '';
    setConn('offline');
    $('login-user').focus();
  }

  async function login(signup) {
    const username = $('login-user').value.trim();
    const password = $('login-pass').value;
    if (!username || !password) { $('login-error').textContent = 'Enter a username and a password.'; return; }
    $('login-error').textContent = signup ? 'Signing up…' : 'Logging in…';
    try {
      if (signup) await api('POST', '/auth/signup', { username, password });
      const session = await api('POST', '/auth/login', { username, password });
      S.token = session.token;
      sessionStorage.setItem('flowline.token', S.token);
      $('login-error').textContent = '';
      await start();
    } catch (e) {
      $('login-error').textContent = (signup ? 'Sign up failed: ' : 'Log in failed: ') + e.message;
    }
  }

  async function start() {
    try {
      S.me = await api('GET', '/users/me');
    } catch (e) {
      showLogin(e.status === 401 ? 'Your session expired; log in again.' : e.message);
      return;
    }
    S.users.set(S.me.id, S.me.username);
    $('login-view').hidden = true;
    $('app-view').hidden = false;
    $('me-name').textContent = S.me.username;
    document.title = 'Flowline chat – ' + S.me.username;
    await refreshSpaces();
    connect();
  }

  async function refreshSpaces() {
    try {
      S.spaces = await api('GET', '/spaces');
      for (const sp of S.spaces) {
        const [chs, mem] = await Promise.all([
          api('GET', '/spaces/' + sp.id + '/channels'),
          api('GET', '/spaces/' + sp.id + '/members'),
        ]);
        S.members.set(sp.id, mem);
        for (const u of mem) S.users.set(u.id, u.username);
        for (const ch of chs) {
          S.channels.set(ch.id, Object.assign(S.channels.get(ch.id) || {}, ch));
          if (ch.kind === 'thread' && ch.parent) noteThread(ch.id, ch.parent.channel, ch.parent.id);
        }
      }
    } catch (e) {
      if (e.status === 401) { showLogin('Your session expired; log in again.'); return; }
      toast('Could not load spaces: ' + e.message);
    }
    // Channels we can read but are not subscribed to yet (created since we connected).
    if (S.conn === 'ready') {
      const missing = [...S.channels.values()].filter((c) => c.kind !== 'thread' && !S.subscribed.has(c.id)).map((c) => c.id);
      if (missing.length) sendOp({ type: 'subscribe', req_id: req({ type: 'subscribe' }), channels: missing });
    }
    renderSidebar();
    // Authors shown as "user N" before we knew them get their names.
    const seen = new Set();
    document.querySelectorAll('.msg[data-key]').forEach((n) => {
      if (seen.has(n.dataset.key)) return;
      seen.add(n.dataset.key);
      const [c, s] = n.dataset.key.split(':').map(Number);
      refreshMsg(c, s);
    });
    if (!S.current) {
      const first = S.spaces.length && [...S.channels.values()].find((c) => c.space === S.spaces[0].id);
      if (first) openChannel(first.id);
    }
  }

  /** A short notice in the channel header (errors of background operations). */
  function toast(text) {
    const info = $('chan-info');
    info.textContent = text;
    clearTimeout(S.toastTimer);
    S.toastTimer = setTimeout(() => { if (info.textContent === text) info.textContent = ''; }, 8000);
  }

  // ---------------------------------------------------------------- WebSocket
  function setConn(state, detail) {
    S.conn = state;
    document.body.dataset.conn = state;
    const box = $('conn');
    if (state === 'ready' || state === 'offline') { box.hidden = true; box.textContent = ''; }
    else {
      box.hidden = false;
      box.textContent = state === 'connecting' ? 'Connecting…' : 'Reconnecting…' + (detail ? ' ' + detail : '');
    }
    const ready = state === 'ready';
    for (const id of ['compose-input', 'send-btn', 'preview-btn', 'file-input']) $(id).disabled = !ready || !S.current;
  }

  function req(info) {
    const id = S.nextReq++;
    S.reqs.set(id, info);
    return id;
  }

  function sendOp(op) {
    if (!S.ws || S.ws.readyState !== WebSocket.OPEN) return false;
    S.ws.send(JSON.stringify(op));
    return true;
  }

  function closeSocket() {
    clearTimeout(S.reconnectTimer);
    clearInterval(S.pingTimer);
    if (S.ws) {
      const ws = S.ws;
      S.ws = null;
      ws.onclose = null;
      ws.close(1000);
    }
  }

  function connect() {
    closeSocket();
    setConn(S.everReady ? 'reconnecting' : 'connecting', S.attempt ? '(attempt ' + (S.attempt + 1) + ')' : '');
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
    let ws;
    try { ws = new WebSocket(url); } catch (_) { scheduleReconnect(); return; }
    S.ws = ws;
    ws.onopen = () => {
      // Resume every channel we hold messages of: the node replays what we missed.
      const resume = {};
      for (const [id, c] of S.chans) if (c.last !== null && S.subscribed.has(id)) resume[id] = c.last;
      ws.send(JSON.stringify({ type: 'hello', token: S.token, resume, subscribe_all: true }));
    };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (_) { return; }
      try { onEvent(msg); } catch (e) { console.error('event handling failed', e, msg); }
    };
    ws.onclose = (ev) => {
      if (S.ws !== ws) return;
      S.ws = null;
      clearInterval(S.pingTimer);
      failPending();
      if (ev.code === 4002 || ev.code === 4012) { showLogin(ev.code === 4012 ? 'You were logged out.' : 'Your session expired; log in again.'); return; }
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    S.attempt += 1;
    // Exponential backoff with jitter, capped at 5 s.
    const delay = Math.min(5000, 250 * 2 ** Math.min(S.attempt, 5)) * (0.5 + Math.random() / 2);
    setConn(S.everReady ? 'reconnecting' : 'connecting', '(retry in ' + Math.ceil(delay / 1000) + ' s)');
    clearTimeout(S.reconnectTimer);
    S.reconnectTimer = setTimeout(connect, delay);
  }

  function startPings() {
    clearInterval(S.pingTimer);
    S.awaitingPong = null;
    // An application ping every 10 s; no answer within the next one means the path is
    // dead (a partition does not always close the socket), so reconnect.
    S.pingTimer = setInterval(() => {
      if (S.awaitingPong !== null) { if (S.ws) S.ws.close(4000); return; }
      S.awaitingPong = Date.now();
      sendOp({ type: 'ping', ts: S.awaitingPong });
    }, 10000);
  }

  /** Sends in flight when the socket dropped: never acked, so say so (resume may still deliver them). */
  function failPending() {
    for (const [nonce, p] of S.pending) {
      if (p.state === 'sending') {
        p.state = 'failed';
        p.error = 'not acknowledged (connection lost)';
        renderPending(nonce);
      }
    }
  }

  function onEvent(m) {
    switch (m.type) {
      case 'ready': return onReady(m);
      case 'message': return onMessage(m, 'live');
      case 'ack': return onAck(m);
      case 'history': return onHistory(m);
      case 'subscribed':
        for (const [id, seq] of Object.entries(m.channels || {})) noteSubscribed(Number(id), seq);
        S.reqs.delete(m.req_id);
        return;
      case 'unsubscribed': S.reqs.delete(m.req_id); return;
      case 'error': return onError(m);
      case 'pong': S.awaitingPong = null; return;
      case 'ok': return onOk(m);
      case 'message_edited': return patchMsg(m.channel, m.seq, (x) => { x.body = m.body; x.edited_at = m.edited_at; });
      case 'message_deleted': return patchMsg(m.channel, m.seq, (x) => { x.body = ''; x.deleted_at = m.deleted_at; x.attachments = []; });
      case 'reaction': return onReaction(m);
      case 'thread_created': return onThread(m, true);
      case 'thread_updated': return onThread(m, false);
      case 'typing': return onTyping(m);
      case 'presence': return onPresence(m);
      default: return undefined;
    }
  }

  function onReady(m) {
    S.attempt = 0;
    S.everReady = true;
    S.subscribed.clear();
    for (const [id, seq] of Object.entries(m.channels || {})) noteSubscribed(Number(id), seq);
    S.presence.clear();
    for (const p of m.presence || []) S.presence.set(p.user_id, p);
    if (!S.presence.has(S.me.id)) S.presence.set(S.me.id, { user_id: S.me.id, status: 'online' });
    setConn('ready');
    startPings();
    renderSidebar();
    renderPresence();
    // Retry what never got acked? No: the user decides (Retry button); resume may still
    // bring those messages back, which resolves them by nonce.
    if (S.current) {
      const c = chan(S.current);
      if (!c.loaded) loadLatest(S.current);
      setConn('ready');
    }
    if (S.thread && !S.subscribed.has(S.thread.channel)) subscribe([S.thread.channel]);
  }

  function noteSubscribed(id, seq) {
    S.subscribed.add(id);
    const c = chan(id);
    // A channel we already track keeps its resume point (the node replays after it).
    if (c.last === null) c.last = seq;
    if (!S.channels.has(id)) {
      // Not a channel of our spaces: a DM, or the thread of a DM (recognised, and moved
      // out of the DM list, once its parent's thread summary is seen).
      S.channels.set(id, { id, name: 'direct message', kind: 'dm' });
    }
  }

  function subscribe(ids) {
    sendOp({ type: 'subscribe', req_id: req({ type: 'subscribe' }), channels: ids });
  }

  function storeMsg(m) {
    const c = chan(m.channel);
    const had = c.msgs.has(m.seq);
    c.msgs.set(m.seq, m);
    c.byId.set(m.id, m.seq);
    if (c.oldest === null || m.seq < c.oldest) c.oldest = m.seq;
    if (m.thread) noteThread(m.thread.channel, m.channel, m.id);
    const ch = S.channels.get(m.channel);
    if (ch && ch.kind === 'dm' && !ch.partner && m.author !== S.me.id) { ch.partner = m.author; renderSidebar(); }
    return had;
  }

  function onMessage(m, source) {
    delete m.type;
    const c = chan(m.channel);
    if (source === 'live') {
      if (c.last !== null && m.seq > c.last + 1) {
        // A gap (should not happen): fetch what is missing.
        sendOp({ type: 'history', req_id: req({ type: 'history', channel: m.channel, gap: true }), channel: m.channel, after: c.last, before: m.seq, limit: 200 });
      }
      if (c.last === null || m.seq > c.last) c.last = m.seq;
    }
    const had = storeMsg(m);
    if (!S.users.has(m.author)) refreshSoon();
    if (m.nonce && S.pending.has(m.nonce)) {
      dropPending(m.nonce);
    }
    const typ = S.typing.get(m.channel);
    if (typ && typ.delete(m.author)) renderTyping();
    if (!had) {
      if (m.channel === S.current) insertMsg($('messages'), m, true);
      else if (S.thread && m.channel === S.thread.channel) insertMsg($('thread-messages'), m, true);
      else if (source === 'live' && !isThreadChannel(m.channel)) { c.unread += 1; renderSidebar(); }
    } else {
      refreshMsg(m.channel, m.seq);
    }
  }

  function onAck(m) {
    const r = S.reqs.get(m.req_id);
    S.reqs.delete(m.req_id);
    if (!r || r.type !== 'send') return;
    const p = S.pending.get(r.nonce);
    if (!p) return;
    // The message is durable: show it at its seq (the message event, if any, dedupes).
    const c = chan(m.channel);
    if (!c.msgs.has(m.seq)) {
      const msg = Object.assign({}, p.op, { seq: m.seq, id: m.id, author: S.me.id, created_at: m.created_at });
      delete msg.type; delete msg.req_id; delete msg.forward_of;
      msg.attachments = p.attachments || [];
      if (p.op.forward_of) msg.forwarded_from = { channel: p.op.forward_of.channel, id: p.op.forward_of.id };
      onMessage(msg, 'ack');
    }
    dropPending(r.nonce);
  }

  function onError(m) {
    const r = m.req_id !== undefined ? S.reqs.get(m.req_id) : null;
    S.reqs.delete(m.req_id);
    if (r && r.type === 'send') {
      const p = S.pending.get(r.nonce);
      if (p) { p.state = 'failed'; p.error = m.message + ' (' + m.code + ')'; renderPending(r.nonce); }
      return;
    }
    if (r && r.type === 'history') { chan(r.channel).loading = false; }
    // `typing` is fire-and-forget (no req_id): a node without it answers unknown_op.
    if (!r && m.code === 'unknown_op') return;
    toast('Error: ' + m.message);
  }

  function onOk(m) {
    S.reqs.delete(m.req_id);
  }

  // ---------------------------------------------------------------- history
  function loadLatest(id) {
    const c = chan(id);
    if (c.loading || S.conn !== 'ready') return;
    c.loading = true;
    sendOp({ type: 'history', req_id: req({ type: 'history', channel: id, latest: true }), channel: id, limit: 50 });
  }

  function loadOlder(id) {
    const c = chan(id);
    if (c.loading || c.start || !c.loaded || c.oldest === null || S.conn !== 'ready') return;
    if (c.oldest <= 1) { c.start = true; renderOlderMarker(); return; }
    c.loading = true;
    renderOlderMarker();
    sendOp({ type: 'history', req_id: req({ type: 'history', channel: id, older: true }), channel: id, before: c.oldest, limit: 50 });
  }

  function onHistory(m) {
    const r = S.reqs.get(m.req_id) || {};
    S.reqs.delete(m.req_id);
    const c = chan(m.channel);
    c.loading = false;
    const box = m.channel === S.current ? $('messages') : (S.thread && m.channel === S.thread.channel ? $('thread-messages') : null);
    const keepBottom = box && (r.latest || nearBottom(box));
    const before = box ? box.scrollHeight - box.scrollTop : 0;
    for (const msg of m.messages) {
      if (r.gap && (c.last === null || msg.seq > c.last)) c.last = msg.seq;
      if (r.latest && c.last !== null && msg.seq > c.last) c.last = msg.seq;
      const had = storeMsg(msg);
      if (msg.nonce && S.pending.has(msg.nonce)) dropPending(msg.nonce);
      if (box && !had) insertMsg(box, msg, false);
    }
    if (r.latest) {
      c.loaded = true;
      if (m.messages.length === 0 || m.messages[0].seq <= 1) c.start = true;
    }
    if (r.older && (m.messages.length === 0 || m.messages[0].seq <= 1)) c.start = true;
    if (box) {
      if (keepBottom) box.scrollTop = box.scrollHeight;
      else if (r.older) box.scrollTop = box.scrollHeight - before; // keep the view still
      if (m.channel === S.current) renderOlderMarker();
      // Still no scrollbar: load more so scrolling back stays possible.
      if (m.channel === S.current && !c.start && box.scrollHeight <= box.clientHeight) loadOlder(m.channel);
    }
  }

  const nearBottom = (box) => box.scrollHeight - box.scrollTop - box.clientHeight < 60;

  function renderOlderMarker() {
    const box = $('messages');
    let mark = box.querySelector('.older');
    if (!mark) { mark = el('div', { class: 'older' }); box.prepend(mark); }
    const c = S.current ? chan(S.current) : null;
    mark.textContent = !c ? '' : c.start ? 'Beginning of ' + channelLabel(S.current) : c.loading ? 'Loading older messages…' : 'Scroll up for older messages';
  }

  // ---------------------------------------------------------------- rendering messages
  function insertMsg(box, m, live) {
    const key = m.channel + ':' + m.seq;
    if (box.querySelector('[data-key="' + key + '"]')) { refreshMsg(m.channel, m.seq); return; }
    const stick = live && nearBottom(box);
    const node = msgNode(m);
    // Keep seq order; pending (unsequenced) messages stay last.
    let after = null;
    for (const other of box.querySelectorAll('.msg[data-seq]')) {
      if (Number(other.dataset.seq) > m.seq) { after = other; break; }
    }
    if (!after) after = box.querySelector('.msg.pending, .msg.failed');
    box.insertBefore(node, after);
    if (stick || (live && m.author === S.me.id)) box.scrollTop = box.scrollHeight;
  }

  function refreshMsg(channel, seq) {
    const m = chan(channel).msgs.get(seq);
    if (!m) return;
    for (const old of document.querySelectorAll('[data-key="' + channel + ':' + seq + '"]')) {
      old.replaceWith(msgNode(m, old.classList.contains('parent-view')));
    }
  }

  function patchMsg(channel, seq, f) {
    const m = chan(channel).msgs.get(seq);
    if (!m) return;
    f(m);
    refreshMsg(channel, seq);
  }

  function refLine(m) {
    const find = (id) => {
      const seq = chan(m.channel).byId.get(id);
      return seq !== undefined ? chan(m.channel).msgs.get(seq) : null;
    };
    if (m.kind === 'reply' && m.reply_to) {
      const o = find(m.reply_to);
      return el('div', { class: 'ref' }, '↪ Reply to ', o ? userName(o.author) + ': ' + excerpt(o.body, 80) : 'message ' + m.reply_to);
    }
    if (m.kind === 'quote' && m.quote) {
      const o = find(m.quote.id);
      return el('blockquote', { class: 'ref' }, (o ? userName(o.author) : 'message ' + m.quote.id) + ' wrote: “' + m.quote.excerpt + '”');
    }
    if (m.kind === 'forward' && m.forwarded_from) {
      const f = m.forwarded_from;
      return el('div', { class: 'ref' }, '⤳ Forwarded from ' + channelLabel(f.channel) + (f.author ? ' (' + userName(f.author) + ')' : ''));
    }
    return null;
  }

  const excerpt = (s, n) => (s.length > n ? s.slice(0, n - 1) + '…' : s);
  const fmtTime = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

  function msgNode(m, parentView) {
    const deleted = !!m.deleted_at;
    const body = el('div', { class: 'msg-body md' });
    if (deleted) body.textContent = 'message deleted';
    else if (!m.kind || m.kind === 'text') body.textContent = m.body;
    else body.innerHTML = renderMarkdown(m.body); // escaped by renderMarkdown
    const node = el('article', {
      class: 'msg' + (deleted ? ' deleted' : '') + (parentView ? ' parent-view' : ''),
      dataset: { key: m.channel + ':' + m.seq, seq: m.seq, id: m.id, channel: m.channel },
      'aria-label': userName(m.author) + ' at ' + fmtTime(m.created_at),
    },
    el('div', { class: 'msg-head' },
      el('span', { class: 'dot ' + presenceOf(m.author).status, 'aria-hidden': 'true' }),
      el('span', { class: 'author' }, userName(m.author)),
      el('time', { datetime: new Date(m.created_at).toISOString() }, fmtTime(m.created_at)),
      el('span', { class: 'seq' }, '#' + m.seq),
      m.edited_at ? el('span', { class: 'muted' }, '(edited)') : null),
    refLine(m),
    body);
    if (m.attachments && m.attachments.length) node.append(attachmentsNode(m.attachments));
    if (m.reactions && m.reactions.length) {
      node.append(el('div', { class: 'reactions', role: 'group', 'aria-label': 'Reactions' },
        m.reactions.map((r) => {
          const mine = S.myReactions.has(m.channel + ':' + m.id + ':' + r.emoji);
          return el('button', { type: 'button', class: 'reaction', 'aria-pressed': mine ? 'true' : 'false', 'aria-label': r.emoji + ' ' + r.count + (mine ? ', yours; click to remove' : ', click to add'), dataset: { emoji: r.emoji }, onclick: () => toggleReaction(m, r.emoji) }, r.emoji + ' ' + r.count);
        })));
    }
    if (m.thread && !parentView) {
      const n = m.thread.replies;
      node.append(el('button', { type: 'button', class: 'link thread-link', onclick: () => openThread(m) }, n + (n === 1 ? ' reply' : ' replies') + ' — view thread'));
    }
    if (!deleted && !parentView) {
      const inThread = isThreadChannel(m.channel);
      node.append(el('div', { class: 'actions', role: 'group', 'aria-label': 'Message actions' },
        ['👍', '🎉', '❤️'].map((e) => el('button', { type: 'button', class: 'react-btn', 'aria-label': 'React with ' + e, dataset: { emoji: e }, onclick: () => toggleReaction(m, e) }, e)),
        el('button', { type: 'button', class: 'reply-btn', onclick: () => setRef({ kind: 'reply', msg: m }) }, 'Reply'),
        el('button', { type: 'button', class: 'quote-btn', onclick: () => setRef({ kind: 'quote', msg: m }) }, 'Quote'),
        el('button', { type: 'button', class: 'forward-btn', onclick: () => forward(m) }, 'Forward'),
        inThread ? null : el('button', { type: 'button', class: 'thread-btn', onclick: () => openThread(m) }, 'Thread'),
        m.author === S.me.id ? el('button', { type: 'button', class: 'delete-btn', onclick: () => delMsg(m) }, 'Delete') : null));
    }
    return node;
  }

  function attachmentsNode(list) {
    return el('div', { class: 'attachments' }, list.map((a) => {
      const label = a.filename + ' (' + fmtSize(a.size) + ')';
      const wrap = el('div', { class: 'attachment' });
      wrap.append(el('button', { type: 'button', class: 'link download', 'aria-label': 'Download ' + label, onclick: () => download(a) }, '📎 ' + label));
      if (/^image\/(png|jpeg|gif|webp)$/.test(a.content_type)) {
        const img = el('img', { alt: a.filename });
        wrap.prepend(img);
        fetchUpload(a).then((blob) => { img.src = URL.createObjectURL(blob); }).catch(() => img.remove());
      }
      return wrap;
    }));
  }

  const fmtSize = (n) => (n < 1024 ? n + ' B' : n < 1048576 ? (n / 1024).toFixed(1) + ' KiB' : (n / 1048576).toFixed(1) + ' MiB');

  async function fetchUpload(a) {
    const resp = await fetch('/api/v1/uploads/' + a.id, { headers: { Authorization: 'Bearer ' + S.token } });
    if (!resp.ok) throw new Error('HTTP ' + resp.status);
    return resp.blob();
  }

  async function download(a) {
    try {
      const blob = await fetchUpload(a);
      const url = URL.createObjectURL(blob);
      const link = el('a', { href: url, download: a.filename });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) {
      toast('Download failed: ' + e.message);
    }
  }

  // ---------------------------------------------------------------- pending sends
  function renderPending(nonce) {
    const p = S.pending.get(nonce);
    if (!p) return;
    const box = p.channel === S.current ? $('messages') : (S.thread && p.channel === S.thread.channel ? $('thread-messages') : null);
    document.querySelectorAll('[data-nonce="' + CSS.escape(nonce) + '"]').forEach((n) => n.remove());
    if (!box) return;
    const failed = p.state === 'failed';
    const node = el('article', { class: 'msg ' + (failed ? 'failed' : 'pending'), dataset: { nonce }, 'aria-label': failed ? 'Message not sent' : 'Message sending' },
      el('div', { class: 'msg-head' }, el('span', { class: 'author' }, S.me.username),
        el('span', { class: 'state' }, failed ? '⚠ Not sent: ' + p.error : 'sending…')),
      el('div', { class: 'msg-body' }, p.op.body),
      failed ? el('div', { class: 'actions' },
        el('button', { type: 'button', class: 'retry-btn', onclick: () => retry(nonce), disabled: S.conn !== 'ready' ? true : undefined }, 'Retry'),
        el('button', { type: 'button', onclick: () => dropPending(nonce) }, 'Discard')) : null);
    box.append(node);
    box.scrollTop = box.scrollHeight;
  }

  function dropPending(nonce) {
    S.pending.delete(nonce);
    document.querySelectorAll('[data-nonce="' + CSS.escape(nonce) + '"]').forEach((n) => n.remove());
  }

  function retry(nonce) {
    const p = S.pending.get(nonce);
    if (!p || S.conn !== 'ready') return;
    p.state = 'sending';
    p.op.req_id = req({ type: 'send', nonce });
    sendOp(p.op);
    renderPending(nonce);
  }

  function postMessage(channel, fields, attachments) {
    const nonce = S.me.id + '-' + Date.now().toString(36) + '-' + (S.nonceSeq++);
    const op = Object.assign({ type: 'send', req_id: req({ type: 'send', nonce }), channel, nonce }, fields);
    S.pending.set(nonce, { channel, op, state: 'sending', attachments });
    if (!sendOp(op)) { S.pending.get(nonce).state = 'failed'; S.pending.get(nonce).error = 'not connected'; }
    renderPending(nonce);
  }

  // ---------------------------------------------------------------- composer
  function setRef(ref) {
    S.compose.ref = ref;
    const box = $('compose-ref');
    if (!ref) { box.hidden = true; return; }
    const who = userName(ref.msg.author);
    $('compose-ref-text').textContent = (ref.kind === 'reply' ? 'Replying to ' : 'Quoting ') + who + ': ' + excerpt(ref.msg.body, 60);
    box.hidden = false;
    if (ref.msg.channel !== S.current && S.thread && ref.msg.channel === S.thread.channel) $('thread-input').focus();
    else $('compose-input').focus();
  }

  function submitCompose() {
    const input = $('compose-input');
    const body = input.value;
    if (!S.current || S.conn !== 'ready') return;
    if (!body.trim() && !S.compose.attachments.length) return;
    const text = body.trim() ? body : S.compose.attachments.map((a) => a.filename).join(', ');
    if (text.length > 4000) { toast('A message has at most 4000 characters.'); return; }
    const fields = { body: text, kind: /[*_`\[~>\n-]/.test(text) ? 'markdown' : 'text' };
    const ref = S.compose.ref;
    if (ref && ref.msg.channel === S.current) {
      if (ref.kind === 'reply') { fields.kind = 'reply'; fields.reply_to = ref.msg.id; }
      if (ref.kind === 'quote') { fields.kind = 'quote'; fields.quote = { id: ref.msg.id, excerpt: excerpt(ref.msg.body, 200).replace(/…$/, '') }; }
    }
    const atts = S.compose.attachments;
    if (atts.length) fields.attachments = atts.map((a) => a.id);
    postMessage(S.current, fields, atts);
    input.value = '';
    S.compose.attachments = [];
    renderAttachList();
    setRef(null);
    if (!$('preview').hidden) togglePreview();
  }

  function togglePreview() {
    const p = $('preview');
    const on = p.hidden;
    p.hidden = !on;
    $('preview-btn').setAttribute('aria-pressed', on ? 'true' : 'false');
    if (on) p.innerHTML = renderMarkdown($('compose-input').value); // escaped by renderMarkdown
  }

  function onComposeInput() {
    if (!$('preview').hidden) $('preview').innerHTML = renderMarkdown($('compose-input').value); // escaped
    const now = Date.now();
    if (S.current && $('compose-input').value && now - S.lastTypingSent > 2500) {
      S.lastTypingSent = now;
      sendOp({ type: 'typing', channel: S.current });
    }
  }

  async function onFile() {
    const input = $('file-input');
    const file = input.files && input.files[0];
    input.value = '';
    if (!file) return;
    const form = new FormData();
    form.append('file', file, file.name);
    $('attach-list').textContent = 'Uploading ' + file.name + '…';
    try {
      const att = await api('POST', '/uploads', form);
      S.compose.attachments.push(att);
    } catch (e) {
      toast('Upload failed: ' + (e.code === 'too_large' ? 'the file is too large' : e.code === 'unsupported_type' ? 'this file type is not allowed' : e.message));
    }
    renderAttachList();
  }

  function renderAttachList() {
    const box = $('attach-list');
    box.textContent = '';
    S.compose.attachments.forEach((a, i) => box.append(el('span', { class: 'pending-attachment' }, '📎 ' + a.filename + ' (' + fmtSize(a.size) + ') ',
      el('button', { type: 'button', class: 'link', 'aria-label': 'Remove attachment ' + a.filename, onclick: () => { S.compose.attachments.splice(i, 1); renderAttachList(); } }, '✕'))));
  }

  // ---------------------------------------------------------------- reactions, forward, delete
  function toggleReaction(m, emoji) {
    const key = m.channel + ':' + m.id + ':' + emoji;
    const type = S.myReactions.has(key) ? 'unreact' : 'react';
    sendOp({ type, req_id: req({ type }), channel: m.channel, id: m.id, emoji });
  }

  function onReaction(ev) {
    const key = ev.channel + ':' + ev.id + ':' + ev.emoji;
    if (ev.user_id === S.me.id) { if (ev.added) S.myReactions.add(key); else S.myReactions.delete(key); }
    const c = chan(ev.channel);
    const seq = ev.seq !== undefined ? ev.seq : c.byId.get(ev.id);
    patchMsg(ev.channel, seq, (m) => {
      m.reactions = m.reactions || [];
      const r = m.reactions.find((x) => x.emoji === ev.emoji);
      if (r) r.count = ev.count; else if (ev.count > 0) m.reactions.push({ emoji: ev.emoji, count: ev.count });
      m.reactions = m.reactions.filter((x) => x.count > 0);
    });
  }

  function forward(m) {
    const sel = $('forward-target');
    sel.textContent = '';
    for (const ch of S.channels.values()) if (ch.kind !== 'thread' && S.subscribed.has(ch.id)) sel.append(el('option', { value: ch.id }, channelLabel(ch.id)));
    const dlg = $('forward-dialog');
    dlg.onclose = () => {
      if (dlg.returnValue !== 'ok') return;
      const target = Number(sel.value);
      postMessage(target, { body: m.body || '(forwarded)', kind: 'forward', forward_of: { channel: m.channel, id: m.id } }, m.attachments);
    };
    dlg.showModal();
  }

  function delMsg(m) {
    if (!confirm('Delete this message?')) return;
    sendOp({ type: 'delete', req_id: req({ type: 'delete' }), channel: m.channel, id: m.id });
  }

  // ---------------------------------------------------------------- threads
  const isThreadChannel = (id) => { const c = S.channels.get(id); return !!c && c.kind === 'thread'; };

  function noteThread(threadChannel, parentChannel, parentId) {
    const ch = S.channels.get(threadChannel) || {};
    const wasListed = ch.kind === 'dm';
    S.channels.set(threadChannel, Object.assign(ch, { id: threadChannel, name: ch.name || 'thread', kind: 'thread', parent: { channel: parentChannel, id: parentId } }));
    if (wasListed) renderSidebar();
  }

  function openThread(m) {
    if (m.thread) { showThread(m.thread.channel, m); return; }
    S.pendingThread = { channel: m.channel, id: m.id };
    sendOp({ type: 'start_thread', req_id: req({ type: 'start_thread' }), channel: m.channel, id: m.id });
  }

  function onThread(ev, created) {
    S.reqs.delete(ev.req_id);
    noteThread(ev.thread.channel, ev.channel, ev.id);
    const c = chan(ev.channel);
    const seq = ev.seq !== undefined ? ev.seq : c.byId.get(ev.id);
    patchMsg(ev.channel, seq, (m) => { m.thread = ev.thread; });
    if (S.thread && S.thread.channel === ev.thread.channel) renderThreadParent();
    if (created && S.pendingThread && S.pendingThread.channel === ev.channel && S.pendingThread.id === ev.id) {
      S.pendingThread = null;
      showThread(ev.thread.channel, c.msgs.get(seq));
    }
  }

  function showThread(threadChannel, parent) {
    noteThread(threadChannel, parent.channel, parent.id);
    S.thread = { channel: threadChannel, parent: { channel: parent.channel, id: parent.id } };
    $('thread-panel').hidden = false;
    $('thread-title').textContent = 'Thread';
    renderThreadParent();
    const box = $('thread-messages');
    box.textContent = '';
    const c = chan(threadChannel);
    for (const seq of [...c.msgs.keys()].sort((a, b) => a - b)) insertMsg(box, c.msgs.get(seq), false);
    for (const [nonce, p] of S.pending) if (p.channel === threadChannel) renderPending(nonce);
    if (!S.subscribed.has(threadChannel)) subscribe([threadChannel]);
    if (!c.loaded) loadLatest(threadChannel);
    $('thread-input').focus();
  }

  function renderThreadParent() {
    const box = $('thread-parent');
    box.textContent = '';
    const p = S.thread.parent;
    const seq = chan(p.channel).byId.get(p.id);
    const m = seq !== undefined ? chan(p.channel).msgs.get(seq) : null;
    if (m) box.append(msgNode(m, true));
    if (m && m.thread) $('thread-title').textContent = 'Thread · ' + m.thread.replies + (m.thread.replies === 1 ? ' reply' : ' replies');
  }

  // ---------------------------------------------------------------- typing, presence
  function onTyping(ev) {
    if (ev.user_id === S.me.id) return;
    if (!S.users.has(ev.user_id)) refreshSoon();
    let t = S.typing.get(ev.channel);
    if (!t) { t = new Map(); S.typing.set(ev.channel, t); }
    t.set(ev.user_id, Date.now() + (ev.expires_ms || 5000));
    renderTyping();
  }

  function renderTyping() {
    const now = Date.now();
    const t = S.current ? S.typing.get(S.current) : null;
    const names = [];
    if (t) for (const [u, exp] of t) { if (exp > now) names.push(userName(u)); else t.delete(u); }
    $('typing').textContent = names.length === 0 ? '' : names.length === 1 ? names[0] + ' is typing…' : names.join(', ') + ' are typing…';
  }

  const presenceOf = (id) => S.presence.get(id) || { status: 'offline' };

  function onPresence(p) {
    S.presence.set(p.user_id, p);
    if (!S.users.has(p.user_id)) refreshSoon();
    renderPresence();
  }

  /** Someone we do not know yet (joined a space since we loaded): reload spaces, once. */
  function refreshSoon() {
    if (S.refreshTimer) return;
    S.refreshTimer = setTimeout(() => { S.refreshTimer = null; refreshSpaces(); }, 200);
  }

  function renderPresence() {
    const me = presenceOf(S.me.id);
    $('me-dot').className = 'dot ' + me.status;
    renderSidebar();
    document.querySelectorAll('.msg').forEach((n) => {
      const key = n.dataset.key;
      if (!key) return;
      const [c, s] = key.split(':').map(Number);
      const m = chan(c).msgs.get(s);
      const dot = n.querySelector('.msg-head .dot');
      if (m && dot) dot.className = 'dot ' + presenceOf(m.author).status;
    });
  }

  const STATUS_TEXT = { online: 'online', idle: 'away', dnd: 'do not disturb', offline: 'offline' };

  // ---------------------------------------------------------------- sidebar
  function chanButton(id) {
    const c = chan(id);
    const ch = S.channels.get(id);
    const kids = [];
    if (ch.kind === 'dm' && ch.partner) kids.push(el('span', { class: 'dot ' + presenceOf(ch.partner).status, 'aria-hidden': 'true' }));
    kids.push(el('span', {}, channelLabel(id)));
    if (c.unread) kids.push(el('span', { class: 'unread', 'aria-label': c.unread + ' unread' }, c.unread));
    return el('li', {}, el('button', { type: 'button', class: 'chan', dataset: { channel: id }, 'aria-current': id === S.current ? 'true' : 'false', onclick: () => openChannel(id) }, kids));
  }

  function renderSidebar() {
    const box = $('spaces');
    box.textContent = '';
    for (const sp of S.spaces) {
      const list = el('ul', { class: 'chan-list' });
      for (const ch of S.channels.values()) if (ch.space === sp.id && ch.kind !== 'thread') list.append(chanButton(ch.id));
      const mem = el('ul', { class: 'members', 'aria-label': 'Members of ' + sp.name });
      for (const u of S.members.get(sp.id) || []) {
        const p = presenceOf(u.id);
        mem.append(el('li', { dataset: { user: u.id, status: p.status } },
          el('span', { class: 'dot ' + p.status, role: 'img', 'aria-label': STATUS_TEXT[p.status] || p.status }),
          el('span', { class: 'member-name' }, u.username),
          p.custom ? el('span', { class: 'custom' }, '— ' + p.custom) : null));
      }
      const form = el('form', { class: 'inline-form', onsubmit: (e) => { e.preventDefault(); createChannel(sp.id, e.target.elements[0].value); } },
        el('label', { for: 'newchan-' + sp.id }, 'New channel in ' + sp.name),
        el('input', { id: 'newchan-' + sp.id, maxlength: 100, placeholder: 'name' }),
        el('button', { type: 'submit', class: 'small' }, 'Add'));
      box.append(el('section', { class: 'space', dataset: { space: sp.id } },
        el('h3', {}, sp.name, ' ', el('span', { class: 'muted' }, '(id ' + sp.id + ')')), list, mem, form));
    }
    const dms = $('dms');
    dms.textContent = '';
    for (const ch of S.channels.values()) if (ch.kind === 'dm') dms.append(chanButton(ch.id));
    const sel = $('dm-user');
    const keep = sel.value;
    sel.textContent = '';
    const seen = new Set([S.me.id]);
    for (const mem of S.members.values()) for (const u of mem) {
      if (seen.has(u.id)) continue;
      seen.add(u.id);
      sel.append(el('option', { value: u.id }, u.username));
    }
    sel.value = keep;
  }

  async function createChannel(space, name) {
    if (!name.trim()) return;
    try {
      const ch = await api('POST', '/spaces/' + space + '/channels', { name: name.trim() });
      S.channels.set(ch.id, ch);
      subscribe([ch.id]);
      renderSidebar();
      openChannel(ch.id);
    } catch (e) { toast('Could not create the channel: ' + e.message); }
  }

  function openChannel(id) {
    S.current = id;
    const c = chan(id);
    c.unread = 0;
    $('chan-title').textContent = channelLabel(id);
    const ch = S.channels.get(id);
    $('chan-info').textContent = ch && ch.kind === 'private' ? 'private channel' : ch && ch.kind === 'dm' ? 'direct message' : '';
    const box = $('messages');
    box.textContent = '';
    for (const seq of [...c.msgs.keys()].sort((a, b) => a - b)) insertMsg(box, c.msgs.get(seq), false);
    for (const [nonce, p] of S.pending) if (p.channel === id) renderPending(nonce);
    renderOlderMarker();
    box.scrollTop = box.scrollHeight;
    if (!c.loaded) loadLatest(id);
    setRef(null);
    setConn(S.conn);
    renderSidebar();
    renderTyping();
  }

  // ---------------------------------------------------------------- wiring
  function wire() {
    $('login-form').addEventListener('submit', (e) => { e.preventDefault(); login(false); });
    $('signup-btn').addEventListener('click', () => login(true));
    $('logout-btn').addEventListener('click', async () => {
      try { await api('POST', '/auth/logout'); } catch (_) { /* logged out locally anyway */ }
      location.reload();
      showLogin('');
    });
    $('status-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const status = $('status-select').value;
      const custom = $('status-custom').value.trim();
      const op = { type: 'set_presence', req_id: req({ type: 'set_presence' }), status };
      if (custom) op.custom = custom;
      sendOp(op);
    });
    $('space-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const name = $('space-name').value.trim();
      if (!name) return;
      try {
        const sp = await api('POST', '/spaces', { name });
        $('space-name').value = '';
        await api('POST', '/spaces/' + sp.id + '/channels', { name: 'general' });
        await refreshSpaces();
      } catch (err) { toast('Could not create the space: ' + err.message); }
    });
    $('join-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const id = Number($('join-id').value.trim());
      if (!Number.isInteger(id) || id <= 0) { toast('A space id is a positive number.'); return; }
      try {
        await api('POST', '/spaces/' + id + '/join');
        $('join-id').value = '';
        await refreshSpaces();
      } catch (err) { toast('Could not join: ' + err.message); }
    });
    $('dm-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const uid = Number($('dm-user').value);
      if (!uid) return;
      try {
        const ch = await api('POST', '/dms', { user_id: uid });
        S.channels.set(ch.id, Object.assign(ch, { partner: uid }));
        if (!S.subscribed.has(ch.id)) subscribe([ch.id]);
        openChannel(ch.id);
      } catch (err) { toast('Could not open the conversation: ' + err.message); }
    });
    $('composer').addEventListener('submit', (e) => { e.preventDefault(); submitCompose(); });
    $('compose-input').addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); submitCompose(); }
      if (e.key === 'Escape') setRef(null);
    });
    $('compose-input').addEventListener('input', onComposeInput);
    $('preview-btn').addEventListener('click', togglePreview);
    $('file-input').addEventListener('change', onFile);
    $('compose-ref-cancel').addEventListener('click', () => setRef(null));
    $('messages').addEventListener('scroll', () => { if ($('messages').scrollTop < 80 && S.current) loadOlder(S.current); });
    $('thread-close').addEventListener('click', () => { $('thread-panel').hidden = true; S.thread = null; $('compose-input').focus(); });
    $('thread-composer').addEventListener('submit', (e) => {
      e.preventDefault();
      const input = $('thread-input');
      if (!S.thread || !input.value.trim() || S.conn !== 'ready') return;
      const body = input.value;
      postMessage(S.thread.channel, { body, kind: /[*_`\[~>\n-]/.test(body) ? 'markdown' : 'text' }, []);
      input.value = '';
    });
    $('thread-input').addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); $('thread-composer').requestSubmit(); }
      if (e.key === 'Escape') $('thread-close').click();
    });
    $('thread-input').addEventListener('input', () => {
      const now = Date.now();
      if (S.thread && now - S.lastTypingSent > 2500) { S.lastTypingSent = now; sendOp({ type: 'typing', channel: S.thread.channel }); }
    });
    setInterval(renderTyping, 1000);
    setInterval(() => { if (S.me && S.conn === 'ready') refreshSpaces(); }, 20000);
  }

  // Read-only hooks for tests and the curious (window.flowline.state in the console).
  window.flowline = { state: S, renderMarkdown, escapeHtml };

  document.addEventListener('DOMContentLoaded', () => {
    wire();
    if (S.token) start(); else showLogin('');
  });
})();
