// IdleClaw's web page: a chat and a live network view. No build step, no
// dependencies. Text from the network (answers, thinking, model names) only
// ever reaches the page as text nodes (textContent, createTextNode): this
// file never assigns HTML, and the page's Content-Security-Policy requires
// Trusted Types, so the browser refuses it if anything tried.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const MAX_CHATS = 50; // conversations kept in localStorage
  const MAX_MESSAGES = 50; // the router's limits on one request
  const MAX_MESSAGE_CHARS = 10000;
  const MAX_TOTAL_CHARS = 100000;
  const MAX_ANSWER_CHARS = 200000; // far beyond the router's own bound
  const MAX_LINE = 1 << 20; // bytes of one event line held while it arrives
  const STORE = 'idleclaw.chats.v1';
  const POLL_MS = 10000;

  // el builds an element: attributes set one by one, children appended as
  // nodes or as text.
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === false || v == null) continue;
      if (k === 'class') e.className = v;
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const k of kids) if (k != null) e.append(typeof k === 'string' ? document.createTextNode(k) : k);
    return e;
  }
  const plural = (n, one, many) => n + ' ' + (n === 1 ? one : many);

  // ---- Markdown, built as DOM nodes ----

  // safeURL returns an http(s) URL's canonical form, or '' for any other
  // scheme (javascript:, data:, relative paths, ...).
  function safeURL(s) {
    try {
      const u = new URL(s);
      return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : '';
    } catch {
      return '';
    }
  }

  const INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*(?=\S)([\s\S]*?\S)\*\*|\*([^\s*](?:[^*]*?[^\s*])?)\*|!\[[^\]]*\]\([^)]*\)|\[([^\]\n]+)\]\((\S+?)(?:\s+"[^"\n]*")?\)/g;

  // inline appends text with code spans, bold, italics and http(s) links
  // to parent. Image syntax stays literal text: the page loads nothing the
  // answer names.
  function inline(parent, text, depth) {
    if (depth > 4) {
      parent.append(text);
      return;
    }
    let last = 0;
    for (const m of text.matchAll(INLINE)) {
      if (m.index > last) parent.append(text.slice(last, m.index));
      last = m.index + m[0].length;
      if (m[1]) parent.append(el('code', null, m[2]));
      else if (m[3] != null) inline(parent.appendChild(el('strong')), m[3], depth + 1);
      else if (m[4] != null) inline(parent.appendChild(el('em')), m[4], depth + 1);
      else if (m[5] != null && safeURL(m[6])) {
        parent.append(el('a', { href: safeURL(m[6]), rel: 'nofollow noopener noreferrer', target: '_blank', title: safeURL(m[6]) }, m[5]));
      } else parent.append(m[0]);
    }
    if (last < text.length) parent.append(text.slice(last));
  }

  const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
  const LIST = /^\s*([-*+]|\d{1,9}[.)])\s+(.*)$/;
  const HR = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
  const HEAD = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;

  // markdown renders text as block nodes into a fragment: fenced code (with
  // a copy button), headings, lists, quotes, rules and paragraphs.
  function markdown(text, depth = 0) {
    const out = document.createDocumentFragment();
    const lines = text.split('\n');
    let para = null;
    let list = null;
    const end = () => {
      para = null;
      list = null;
    };
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      let m;
      if ((m = FENCE.exec(line))) {
        end();
        const fence = m[1];
        const body = [];
        for (i++; i < lines.length && !lines[i].trimStart().startsWith(fence); i++) body.push(lines[i]);
        out.append(codeBlock(body.join('\n'), m[2]));
      } else if (!line.trim()) {
        end();
      } else if ((m = HEAD.exec(line))) {
        end();
        inline(out.appendChild(el('h' + Math.min(6, m[1].length + 2))), m[2], 0);
      } else if (HR.test(line)) {
        end();
        out.append(el('hr'));
      } else if (/^ {0,3}>/.test(line) && depth < 4) {
        end();
        const quoted = [];
        for (; i < lines.length && /^ {0,3}>/.test(lines[i]); i++) quoted.push(lines[i].replace(/^ {0,3}> ?/, ''));
        i--;
        out.append(el('blockquote', null, markdown(quoted.join('\n'), depth + 1)));
      } else if ((m = LIST.exec(line))) {
        const tag = /\d/.test(m[1]) ? 'ol' : 'ul';
        if (!list || list.tagName.toLowerCase() !== tag) {
          para = null;
          list = out.appendChild(el(tag));
          if (tag === 'ol' && parseInt(m[1], 10) !== 1) list.setAttribute('start', String(parseInt(m[1], 10)));
        }
        inline(list.appendChild(el('li')), m[2], 0);
      } else if (list && /^\s+\S/.test(line)) {
        const li = list.lastElementChild;
        li.append(el('br'));
        inline(li, line.trim(), 0);
      } else {
        list = null;
        if (para) para.append(el('br'));
        else para = out.appendChild(el('p'));
        inline(para, line, 0);
      }
    }
    return out;
  }

  function codeBlock(code, lang) {
    return el('div', { class: 'code' },
      lang ? el('span', { class: 'lang' }, lang) : null,
      el('pre', null, el('code', null, code)),
      el('button', { type: 'button', class: 'copy', 'aria-label': 'Copy code' }, 'Copy'));
  }

  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // Plain http (not localhost) has no clipboard API: select the text
      // and use the old command.
      const t = el('textarea', { class: 'sr', 'aria-hidden': 'true' });
      t.value = text;
      document.body.append(t);
      t.select();
      let ok = false;
      try {
        ok = document.execCommand('copy');
      } catch {
        ok = false;
      }
      t.remove();
      return ok;
    }
  }

  document.addEventListener('click', async (e) => {
    const b = e.target.closest && e.target.closest('button.copy');
    if (!b) return;
    const code = b.parentElement.querySelector('pre code');
    const ok = await copyText(code.textContent);
    b.textContent = ok ? 'Copied' : 'Select and copy';
    setTimeout(() => { b.textContent = 'Copy'; }, 1500);
  });

  // ---- conversations, kept in this browser only ----

  let storageOK = true;
  function loadChats() {
    try {
      const v = JSON.parse(localStorage.getItem(STORE) || '[]');
      return Array.isArray(v) ? v.filter((c) => c && typeof c.id === 'string' && Array.isArray(c.messages)) : [];
    } catch {
      storageOK = false;
      return [];
    }
  }
  let chats = loadChats();
  let current = null; // the chat shown; null: a new one, not kept until its first message

  function saveChats() {
    const kept = chats.filter((c) => c.messages.length > 0).sort((a, b) => b.updated - a.updated).slice(0, MAX_CHATS);
    for (let n = kept.length; n >= 0; n--) {
      try {
        localStorage.setItem(STORE, JSON.stringify(kept.slice(0, n)));
        return;
      } catch {
        // Over quota: drop the oldest conversations and try again.
      }
    }
    storageOK = false;
  }

  function newChat() {
    return { id: Date.now().toString(36) + Math.random().toString(36).slice(2, 8), title: '', model: '', think: false, messages: [], updated: Date.now() };
  }

  // ---- the network: one feed for both views ----

  let net = null; // the last /api/network document
  let feed = 'connecting'; // 'live', 'poll' or 'down'
  let es = null;
  let pollTimer = 0;
  let downTimer = 0;

  function startFeed() {
    if (!window.EventSource) {
      startPoll();
      return;
    }
    es = new EventSource('/api/network/events');
    es.onopen = () => {
      clearTimeout(downTimer);
      feed = 'live';
      renderLive();
    };
    es.onmessage = (e) => {
      clearTimeout(downTimer);
      feed = 'live';
      try {
        onNetwork(JSON.parse(e.data));
      } catch {
        // A malformed event is skipped; the next one replaces it.
      }
    };
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        // Refused (too many listeners, rate limit) or not there: poll,
        // and try the live feed again in a minute.
        es = null;
        startPoll();
        setTimeout(() => {
          if (!es) {
            clearInterval(pollTimer);
            startFeed();
          }
        }, 60000);
      } else {
        // The browser reconnects by itself (the router ends each stream
        // after a while): say "offline" only if that takes long.
        clearTimeout(downTimer);
        downTimer = setTimeout(() => {
          feed = 'down';
          renderLive();
        }, 8000);
      }
    };
  }

  function startPoll() {
    clearInterval(pollTimer);
    const poll = async () => {
      try {
        const r = await fetch('/api/network', { cache: 'no-store' });
        if (!r.ok) throw new Error('HTTP ' + r.status);
        feed = 'poll';
        onNetwork(await r.json());
      } catch {
        feed = 'down';
        renderLive();
      }
    };
    poll();
    pollTimer = setInterval(poll, POLL_MS);
  }

  function onNetwork(doc) {
    if (!doc || !Array.isArray(doc.models)) return;
    net = doc;
    net.at = new Date();
    renderLive();
    renderModels();
    if (view === 'network') renderNetwork();
  }

  function renderLive() {
    const live = $('live');
    const n = net ? net.node_count : 0;
    let cls = 'down';
    let text = 'offline';
    let more = ', retrying';
    if (feed === 'connecting') {
      cls = '';
      text = 'connecting';
      more = '';
    } else if (feed !== 'down' && net) {
      cls = n > 0 ? 'up' : 'empty';
      text = n > 0 ? plural(n, 'node', 'nodes') : 'no node';
      more = ' online';
    }
    live.className = 'live ' + cls;
    $('live-text').textContent = text;
    $('live-more').textContent = more;
  }

  // ---- model picker ----

  let modelList = []; // [{name, thinking, tools, nodes, free}]

  function renderModels() {
    if (net) {
      modelList = net.models.filter((m) => m.servable > 0).slice(0, 200).map((m) => ({
        name: m.name, thinking: !!m.thinking, tools: !!m.tool_calls, nodes: m.servable, free: m.free_slots,
      }));
    }
    const sel = $('model');
    const chat = current || draft;
    const want = chat.model || localStorage.getItem('idleclaw.model') || (modelList[0] && modelList[0].name) || '';
    const opts = modelList.map((m) => {
      const caps = m.nodes == null ? [] : [plural(m.nodes, 'node', 'nodes')];
      if (m.thinking) caps.push('thinks');
      if (m.tools) caps.push('tools');
      return el('option', { value: m.name }, caps.length ? m.name + ' \u00b7 ' + caps.join(', ') : m.name);
    });
    if (want && !modelList.some((m) => m.name === want)) opts.push(el('option', { value: want }, want + ' \u00b7 no node now'));
    if (!opts.length) opts.push(el('option', { value: '' }, 'no model online'));
    // Replace the options only when they change: an open picker stays open.
    const sig = opts.map((o) => o.value + '\n' + o.textContent).join('\n');
    if (sig !== sel.dataset.sig) {
      sel.dataset.sig = sig;
      sel.replaceChildren(...opts);
    }
    sel.value = want;
    renderModelInfo();
  }

  function selectedModel() {
    return modelList.find((m) => m.name === $('model').value) || null;
  }

  function renderModelInfo() {
    const m = selectedModel();
    const chat = current || draft;
    $('think-wrap').hidden = !(m && m.thinking);
    $('think').checked = !!(m && m.thinking && chat.think);
    $('model-info').textContent = m && m.free != null ? plural(m.free, 'free slot', 'free slots') : '';
  }

  // ---- the chat view ----

  let draft = newChat(); // the chat being started, before its first message
  let streaming = null; // {controller, chat, msg, node}

  function renderConversations() {
    const ul = $('conv-list');
    const list = chats.filter((c) => c.messages.length).sort((a, b) => b.updated - a.updated);
    ul.replaceChildren(...list.map((c) => el('li', null,
      el('button', { type: 'button', 'data-id': c.id, 'aria-current': current && c.id === current.id ? 'true' : false }, c.title || 'Untitled'))));
    if (!storageOK) ul.append(el('li', { class: 'note' }, 'This browser does not keep conversations: they end with the page.'));
  }

  function messageNode(m) {
    if (m.role === 'user') return el('article', { class: 'msg user', 'aria-label': 'You' }, el('div', { class: 'body' }, m.content));
    const node = el('article', { class: 'msg assistant', 'aria-label': 'Answer' });
    updateAnswer(node, m);
    return node;
  }

  // updateAnswer shows an answer's current state in its node, keeping the
  // thinking block (and whether the reader opened it) across updates.
  function updateAnswer(node, m) {
    let think = node.querySelector('details.thinking');
    if (m.thinking && !think) {
      const summary = el('summary', null, 'Thinking');
      think = el('details', { class: 'thinking', open: !m.content }, summary, el('div'));
      // The reader's own click (or Enter, Space) wins over the folding below.
      summary.addEventListener('click', () => { think.dataset.touched = '1'; }, { once: true });
      node.prepend(think);
    }
    if (think) {
      think.lastElementChild.textContent = m.thinking;
      if (m.content && !think.dataset.touched && streaming && streaming.msg === m) think.open = false;
    }
    let body = node.querySelector('.body');
    if (!body) body = node.appendChild(el('div', { class: 'body' }));
    body.replaceChildren(markdown(m.content));
    for (const c of node.querySelectorAll('.err, .meta')) c.remove();
    if (m.error) node.append(el('p', { class: 'err', role: 'alert' }, m.error));
    const meta = [];
    if (m.model) meta.push(m.model);
    if (m.stopped) meta.push('stopped');
    if (m.tokens) meta.push(plural(m.tokens, 'token', 'tokens'));
    if (m.tier) meta.push(m.tier + ' node');
    if (meta.length) node.append(el('div', { class: 'meta' }, meta.join(' \u00b7 ')));
  }

  function renderChat() {
    const chat = current || draft;
    const log = $('log');
    const nodes = chat.messages.map(messageNode);
    $('empty').hidden = nodes.length > 0;
    log.replaceChildren($('empty'), ...nodes);
    if (streaming && streaming.chat === chat) streaming.node = nodes[nodes.length - 1];
    log.scrollTop = log.scrollHeight;
    renderConversations();
    renderModels();
    setBusy(!!streaming);
  }

  function setBusy(b) {
    $('send').hidden = b;
    $('stop').hidden = !b;
  }

  function setStatus(text, isError) {
    const s = $('status');
    s.textContent = text || '';
    s.className = 'status' + (isError ? ' err' : '');
  }

  // history is the conversation as the router takes it: user and answer
  // texts, the latest that fit its limits.
  function historyFor(chat) {
    const msgs = [];
    let total = 0;
    for (let i = chat.messages.length - 1; i >= 0 && msgs.length < MAX_MESSAGES; i--) {
      const m = chat.messages[i];
      const content = m.content.slice(0, MAX_MESSAGE_CHARS);
      if (!content) continue;
      total += content.length;
      if (total > MAX_TOTAL_CHARS) break;
      msgs.unshift({ role: m.role, content });
    }
    while (msgs.length && msgs[0].role !== 'user') msgs.shift();
    return msgs;
  }

  // readLimited reads at most max bytes of a response body as text.
  async function readLimited(resp, max) {
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let text = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += dec.decode(value, { stream: true });
      if (text.length > max) {
        reader.cancel();
        break;
      }
    }
    return text.slice(0, max);
  }

  async function refusal(resp) {
    let detail = '';
    try {
      const d = JSON.parse(await readLimited(resp, 8192)).detail;
      detail = typeof d === 'string' ? d : '';
    } catch {
      detail = '';
    }
    const retry = parseInt(resp.headers.get('Retry-After') || '', 10);
    const again = retry > 0 ? ' Try again in ' + plural(retry, 'second', 'seconds') + '.' : '';
    if (resp.status === 429) return (detail || 'Too many requests') + '.' + again;
    if (resp.status === 503) return (detail || 'The network cannot serve this now') + '.' + again;
    if (detail) return detail + '.';
    return 'The router answered HTTP ' + resp.status + '.';
  }

  async function send(text) {
    if (streaming) return;
    const model = $('model').value;
    let chat = current;
    if (!chat) {
      chat = draft;
      draft = newChat();
      chats.push(chat);
      current = chat;
    }
    const caps = selectedModel();
    chat.model = model;
    chat.think = $('think').checked;
    if (!chat.title) chat.title = text.slice(0, 60);
    chat.messages.push({ role: 'user', content: text });
    const body = JSON.stringify({ model, messages: historyFor(chat), think: !!(caps && caps.thinking && chat.think) });
    const msg = { role: 'assistant', content: '', thinking: '', model };
    chat.messages.push(msg);
    chat.updated = Date.now();
    try {
      localStorage.setItem('idleclaw.model', model);
    } catch {
      // not kept: the picker falls back to the network's first model
    }
    saveChats();
    const controller = new AbortController();
    const st = { controller, chat, msg, node: null };
    streaming = st;
    renderChat();
    const node = () => (current === chat ? st.node : null);
    if (node()) node().setAttribute('aria-busy', 'true');
    setStatus('Waiting for a node\u2026');
    let pending = false;
    let saved = Date.now();
    const show = () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        if (node()) {
          updateAnswer(node(), msg);
          const log = $('log');
          if (log.scrollHeight - log.scrollTop - log.clientHeight < 120) log.scrollTop = log.scrollHeight;
        }
        if (Date.now() - saved > 1000) {
          saved = Date.now();
          saveChats();
        }
      });
    };
    try {
      const resp = await fetch('/api/chat', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body, signal: controller.signal });
      if (!resp.ok) {
        msg.error = await refusal(resp);
      } else {
        await readStream(resp, msg, show);
      }
    } catch (err) {
      if (controller.signal.aborted) msg.stopped = true;
      else msg.error = 'The connection to the router was lost before the answer ended.';
    }
    streaming = null;
    chat.updated = Date.now();
    if (!msg.content && !msg.thinking && !msg.error && !msg.stopped) msg.error = 'The node sent an empty answer.';
    saveChats();
    setStatus(msg.error ? msg.error : msg.stopped ? 'Stopped.' : '', !!msg.error);
    const n = node();
    if (n) {
      n.removeAttribute('aria-busy');
      updateAnswer(n, msg);
    }
    setBusy(false);
    renderConversations();
  }

  // readStream reads the router's event stream (protocol §1.1) into msg.
  async function readStream(resp, msg, show) {
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    let finish = '';
    let started = false;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      if (buf.length > MAX_LINE && buf.indexOf('\n') < 0) throw new Error('event too long');
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, '');
        buf = buf.slice(nl + 1);
        if (line.startsWith(': queued position=')) {
          setStatus('Every node is busy: you are number ' + parseInt(line.slice(18), 10) + ' in line.');
          continue;
        }
        if (!line.startsWith('data: ')) continue;
        const data = line.slice(6);
        if (data === '[DONE]') {
          reader.cancel();
          break;
        }
        let ev;
        try {
          ev = JSON.parse(data);
        } catch {
          continue;
        }
        const c = ev && ev.choices && ev.choices[0];
        if (!c) continue;
        const d = c.delta || {};
        if (typeof d.content === 'string' && d.content) {
          if (!started) {
            started = true;
            setStatus('');
          }
          if (d.reasoning) msg.thinking += d.content;
          else msg.content += d.content;
          if (msg.content.length + msg.thinking.length > MAX_ANSWER_CHARS) {
            reader.cancel();
            msg.error = 'The answer was too long and was cut.';
            return;
          }
          show();
        }
        if (c.finish_reason) finish = c.finish_reason;
        if (ev.usage && ev.usage.completion_tokens) msg.tokens = ev.usage.completion_tokens;
        if (typeof ev.trust_tier === 'string') msg.tier = ev.trust_tier.slice(0, 20);
      }
    }
    if (finish === 'error' || finish === 'length') {
      // The router ends a failed stream with "\n\n[Error: <its text>]".
      const m = /\n\n\[Error: ([^\]\n]{1,300})\]$/.exec(msg.content);
      if (m) {
        msg.content = msg.content.slice(0, m.index);
        msg.error = m[1].charAt(0).toUpperCase() + m[1].slice(1) + '.';
      } else if (finish === 'error') msg.error = 'The answer failed.';
    }
    if (!finish && !msg.error) msg.error = 'The answer ended early.';
  }

  function stop() {
    if (streaming) streaming.controller.abort();
  }

  function showChat(chat) {
    current = chat;
    renderChat();
    setStatus('');
  }

  // ---- the network view ----

  function renderNetwork() {
    if (!net) return;
    const servable = net.models.filter((m) => m.servable > 0).length;
    $('s-nodes').textContent = String(net.node_count);
    $('s-models').textContent = String(servable);
    $('s-tps').textContent = typeof net.tokens_per_second === 'number' ? net.tokens_per_second.toFixed(1) : '\u2013';
    $('s-active').textContent = String(net.requests_active);
    $('s-queued').textContent = String(net.requests_queued);
    $('models-body').replaceChildren(...net.models.slice(0, 200).map((m) => el('tr', null,
      el('th', { scope: 'row' }, m.name),
      el('td', null, String(m.nodes)),
      el('td', null, String(m.servable)),
      el('td', null, String(m.free_slots)),
      el('td', null, (m.capabilities || []).filter((c) => c !== 'completion').join(', ') || '\u2013'),
      el('td', null, m.verified + ' of ' + m.nodes))));
    $('models-table').hidden = net.models.length === 0;
    $('no-models').hidden = net.models.length > 0;
    $('net-updated').textContent = 'Updated ' + net.at.toLocaleTimeString() + (feed === 'live' ? ', live' : ', every ' + POLL_MS / 1000 + ' s');
  }

  // ---- views and wiring ----

  let view = '';
  function route() {
    view = location.pathname === '/network' ? 'network' : 'chat';
    $('chat-view').hidden = view !== 'chat';
    $('network-view').hidden = view !== 'network';
    $('menu').hidden = view !== 'chat';
    $('skip').hidden = view !== 'chat';
    $('nav-chat').removeAttribute('aria-current');
    $('nav-network').removeAttribute('aria-current');
    $(view === 'chat' ? 'nav-chat' : 'nav-network').setAttribute('aria-current', 'page');
    document.title = view === 'network' ? 'Network \u00b7 IdleClaw' : 'IdleClaw';
    if (view === 'network') renderNetwork();
    else renderChat();
  }

  for (const a of [$('nav-chat'), $('nav-network')]) {
    a.addEventListener('click', (e) => {
      if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
      e.preventDefault();
      if (location.pathname !== a.getAttribute('href')) history.pushState(null, '', a.getAttribute('href'));
      route();
    });
  }
  window.addEventListener('popstate', route);

  $('composer').addEventListener('submit', (e) => {
    e.preventDefault();
    const p = $('prompt');
    const text = p.value.trim();
    if (!text || streaming) return;
    if (!$('model').value) {
      // Nothing to send to: the text stays in the box.
      setStatus('No model is online right now: no node serves the network.', true);
      return;
    }
    p.value = '';
    send(text);
    p.focus();
  });
  $('prompt').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $('composer').requestSubmit();
    }
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && streaming) stop();
  });
  $('stop').addEventListener('click', stop);
  $('model').addEventListener('change', () => {
    const chat = current || draft;
    chat.model = $('model').value;
    renderModelInfo();
    if (current) saveChats();
  });
  $('think').addEventListener('change', () => {
    (current || draft).think = $('think').checked;
    if (current) saveChats();
  });
  $('new-chat').addEventListener('click', () => {
    draft = newChat();
    showChat(null);
    closeSidebar();
    $('prompt').focus();
  });
  let confirmTimer = 0;
  $('clear').addEventListener('click', () => {
    const b = $('clear');
    if (!current) return;
    if (!b.dataset.confirm) {
      b.dataset.confirm = '1';
      b.textContent = 'Delete? Click again';
      confirmTimer = setTimeout(() => { delete b.dataset.confirm; b.textContent = 'Delete'; }, 3000);
      return;
    }
    clearTimeout(confirmTimer);
    delete b.dataset.confirm;
    b.textContent = 'Delete';
    if (streaming && streaming.chat === current) stop();
    chats = chats.filter((c) => c !== current);
    saveChats();
    draft = newChat();
    showChat(null);
  });
  $('conv-list').addEventListener('click', (e) => {
    const b = e.target.closest('button[data-id]');
    if (!b) return;
    const c = chats.find((x) => x.id === b.dataset.id);
    if (c) showChat(c);
    closeSidebar();
  });
  function closeSidebar() {
    $('sidebar').classList.remove('open');
    $('menu').setAttribute('aria-expanded', 'false');
  }
  $('menu').addEventListener('click', () => {
    const open = $('sidebar').classList.toggle('open');
    $('menu').setAttribute('aria-expanded', String(open));
  });
  // A conversation kept by another tab shows here when this tab looks at it.
  window.addEventListener('storage', (e) => {
    if (e.key !== STORE || streaming) return;
    const id = current && current.id;
    chats = loadChats();
    current = chats.find((c) => c.id === id) || null;
    if (view === 'chat') renderChat();
  });

  $('share-cmd').textContent = 'idleclaw contribute --server ' + location.origin;
  // The most recent conversation opens where the reader left it.
  current = chats.slice().sort((a, b) => b.updated - a.updated)[0] || null;
  fetch('/api/models', { cache: 'no-store' }).then((r) => (r.ok ? r.json() : null)).then((d) => {
    if (!d || !Array.isArray(d.models) || net) return;
    modelList = d.models.slice(0, 200).map((name) => {
      const c = (d.capabilities && d.capabilities[name]) || {};
      return { name, thinking: !!c.thinking, tools: !!c.tool_calls, nodes: null, free: null };
    });
    renderModels();
  }).catch(() => {});
  route();
  startFeed();
})();
