// The Label page's one-image-at-a-time labeller (a Streamlit components v2 component).
//
// Keys are handled here, in the page: a class key labels the image on screen and the next
// preloaded image is shown in the same frame, without waiting for the server. Each action becomes
// an event {seq, kind, item_id, class_id | target} naming the item that was on screen. Events stay
// in an outbox (kept in sessionStorage, so a reload loses nothing) until the server acknowledges
// them; every update sends the whole outbox, and the server applies each sequence number once and
// in order (labelkit/labelling.py). Only acknowledged events are called saved.
//
// window.__labeller.log records, per key press, the item shown when it was pressed and when the
// next image was painted: the browser test and bench_label_page read it.

const STORAGE = "labelkit.labeller";
// An update not answered by then is sent again. Any answer releases the next update; this is for
// one lost on a reconnect, and a resend interrupts a slow rerun (a training worker shares the CPU).
const RESEND_MS = 6000;
const LOG_KEPT = 5000;
const CACHE_KEPT = 300; // items whose image the browser keeps (and tells the server it has)

// A duplicated browser tab starts with a copy of the sessionStorage, client id included; two pages
// numbering events as one client would have one's events taken for repeats of the other's. So a
// page claims its client id in localStorage while it lives (released on pagehide, which a reload
// fires first); a page that finds its id held by another live page starts as a new client.
const CLAIMS = "labelkit.labeller.claims";
const CLAIM_EXPIRES_MS = 60000; // a page that died without pagehide frees its id after this
const PAGE = String(Math.random()).slice(2) + Date.now();

function claims() {
  try {
    return JSON.parse(window.localStorage.getItem(CLAIMS) || "{}") || {};
  } catch (_) {
    return {};
  }
}

function claim(client) {
  const all = claims();
  const now = Date.now();
  for (const [id, held] of Object.entries(all)) if (now - held.at > CLAIM_EXPIRES_MS) delete all[id];
  if (all[client] && all[client].page !== PAGE) return false;
  all[client] = { page: PAGE, at: now };
  try {
    window.localStorage.setItem(CLAIMS, JSON.stringify(all));
  } catch (_) {
    // no localStorage: duplicated tabs cannot be told apart, everything else works
  }
  return true;
}

function release(client) {
  const all = claims();
  if (all[client] && all[client].page === PAGE) {
    delete all[client];
    try {
      window.localStorage.setItem(CLAIMS, JSON.stringify(all));
    } catch (_) {
      // nothing to release then
    }
  }
}

function newClient() {
  const id = window.crypto && crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2) + Date.now();
  claim(id);
  return { client: id, nextSeq: 1, acked: 0, outbox: [] };
}

function restore() {
  try {
    const saved = JSON.parse(window.sessionStorage.getItem(STORAGE) || "null");
    if (saved && typeof saved.client === "string" && Array.isArray(saved.outbox)) {
      // held by a live page: this is its duplicate, and the outbox is that page's to send
      if (claim(saved.client)) return saved;
    }
  } catch (_) {
    // unreadable storage: start a new client
  }
  return newClient();
}

function createState() {
  const saved = restore();
  return {
    client: saved.client,
    nextSeq: saved.nextSeq,
    acked: saved.acked,
    outbox: saved.outbox,
    current: null, // the item on screen
    upcoming: [], // preloaded items, next first
    cache: new Map(), // item id -> item with its image, as last sent
    acted: new Set(), // items labelled or skipped on this page (not undone): never shown again
    labels: [], // {seq, item} of labels that can still be undone, newest last
    classes: [],
    byKey: new Map(),
    ready: false,
    queueKey: null,
    sentAt: -Infinity,
    inflight: false,
    sends: 0,
    errorsSeen: new Set(),
    message: null,
    log: [],
    trace: [], // sends and receipts with their times, to see where a delay came from
    awaiting: [], // log entries whose next image is not on screen yet
    dom: null,
    setState: null,
    listener: null,
    timer: null,
  };
}

function persist(L) {
  try {
    const { client, nextSeq, acked, outbox } = L;
    window.sessionStorage.setItem(STORAGE, JSON.stringify({ client, nextSeq, acked, outbox }));
  } catch (_) {
    // storage full or disabled: the outbox still lives in memory until acknowledged
  }
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function build(L, root) {
  const top = element("div", "lk");
  const picture = element("div", "lk-picture");
  const frame = element("div", "lk-frame");
  const caption = element("div", "lk-caption");
  const why = element("div", "lk-caption");
  const status = element("div", "lk-status");
  picture.append(frame, caption, why, status);
  const controls = element("div", "lk-controls");
  const guess = element("div", "lk-guess");
  const now = element("div", "lk-caption");
  const buttons = element("div", "lk-buttons");
  const row = element("div", "lk-row");
  const skip = element("button", "", "");
  skip.innerHTML = "<kbd>→</kbd>Skip";
  const undo = element("button", "", "");
  undo.innerHTML = "<kbd>⌫</kbd>Undo";
  skip.onclick = () => act(L, "skip", null, "click");
  undo.onclick = () => act(L, "undo", null, "click");
  row.append(skip, undo);
  controls.append(guess, now, buttons, row);
  top.append(picture, controls);
  root.appendChild(top);
  top.dataset.labeller = "1";
  return { top, frame, caption, why, status, guess, now, buttons, skip, undo, shownImg: null, classesDrawn: "" };
}

function preload(item) {
  if (!item._img) {
    const img = new Image();
    img.alt = item.name;
    img.src = item.src;
    img.dataset.itemId = String(item.id);
    // decode() off the critical path, so that showing it later costs one paint
    img.decode().catch(() => {});
    item._img = img;
  }
  return item;
}

function drawClasses(L) {
  const d = L.dom;
  const signature = JSON.stringify(L.classes.map((c) => [c.id, c.name, c.key]));
  if (d.classesDrawn === signature) return;
  d.classesDrawn = signature;
  d.buttons.replaceChildren();
  for (const c of L.classes) {
    const b = element("button");
    b.dataset.classId = String(c.id);
    if (c.key) b.append(element("kbd", "", c.key));
    b.append(document.createTextNode(c.name));
    b.title = c.key ? `${c.name} (key ${c.key})` : c.name;
    b.onclick = () => act(L, "label", c.id, "click");
    d.buttons.append(b);
  }
}

function drawItem(L) {
  const d = L.dom;
  const item = L.current;
  if (!item) {
    d.shownImg = null;
    d.frame.replaceChildren(element("div", "lk-empty", L.empty ? "No more items match this filter." : "Loading the next images…"));
    d.top.dataset.itemId = "";
    d.caption.textContent = "";
    d.why.textContent = "";
    d.now.textContent = "";
    d.guess.replaceChildren();
    d.guess.hidden = true;
  } else {
    const img = preload(item)._img;
    if (d.shownImg !== img) {
      d.frame.replaceChildren(img);
      d.shownImg = img;
      img.classList.toggle("lk-small", Math.max(img.naturalWidth || 0, img.naturalHeight || 0) < 200);
      img.onload = () => img.classList.toggle("lk-small", Math.max(img.naturalWidth, img.naturalHeight) < 200);
    }
    d.top.dataset.itemId = String(item.id);
    d.caption.textContent = item.name;
    d.why.textContent = item.why ? `Why this image: ${item.why}` : "";
    d.now.textContent = item.now || "";
    drawGuess(L, item);
  }
  const top = item && item.top.length ? item.top[0].class_id : null;
  for (const b of d.buttons.children) {
    b.classList.toggle("lk-suggested", top !== null && b.dataset.classId === String(top));
    b.disabled = !L.ready || !item;
  }
  d.skip.disabled = !item;
  d.undo.disabled = !L.ready || L.labels.length === 0;
  // painted in the next frame: that is when the expert sees the new image
  if (L.awaiting.length && item) {
    const entries = L.awaiting.splice(0);
    requestAnimationFrame(() => {
      const t = performance.now();
      for (const e of entries) e.t_shown = t;
    });
  }
}

function drawGuess(L, item) {
  const g = L.dom.guess;
  g.replaceChildren();
  g.hidden = !item.top.length;
  if (!item.top.length) return;
  g.append(element("div", "lk-guess-title", `${L.model || "Model"} suggests (Enter accepts)`));
  item.top.forEach((s, i) => {
    const row = element("div", i === 0 ? "lk-guess-row lk-top" : "lk-guess-row");
    row.append(element("span", "", s.name), element("span", "", `${Math.round(s.confidence * 100)} %`));
    g.append(row);
  });
}

function drawStatus(L) {
  const s = L.dom.status;
  const pending = L.outbox.filter((e) => e.kind !== "skip").length;
  if (L.message) {
    s.className = "lk-status lk-error";
    s.textContent = L.message;
  } else if (pending) {
    s.className = "lk-status lk-pending";
    s.textContent = `Saving… ${pending} pending`;
  } else if (L.acked > 0) {
    s.className = "lk-status lk-saved";
    s.textContent = "Saved ✓";
  } else {
    s.className = "lk-status";
    s.textContent = "";
  }
}

function advance(L) {
  while (L.upcoming.length && L.acted.has(L.upcoming[0].id)) L.upcoming.shift();
  L.current = L.upcoming.length ? L.upcoming.shift() : null;
  for (const next of L.upcoming.slice(0, 3)) preload(next);
}

function act(L, kind, classId, key) {
  const t_key = performance.now();
  if (kind !== "skip" && !L.ready) {
    L.message = "Enter your name as annotator in the sidebar before labelling.";
    drawStatus(L);
    return;
  }
  let event;
  if (kind === "undo") {
    const last = L.labels.pop();
    if (!last) return;
    event = { seq: L.nextSeq++, kind, item_id: last.item.id, target: last.seq, annotator: L.annotator };
    if (L.current) L.upcoming.unshift(L.current);
    L.acted.delete(last.item.id);
    L.current = last.item;
  } else {
    const item = L.current;
    if (!item) {
      L.log.push({ seq: null, kind, key, item_id: null, t_key, t_shown: null });
      return; // nothing on screen: the key names no image
    }
    event = { seq: L.nextSeq++, kind, item_id: item.id, annotator: L.annotator };
    if (kind === "label") {
      event.class_id = classId;
      L.labels.push({ seq: event.seq, item });
    }
    L.acted.add(item.id);
    advance(L);
  }
  L.message = null;
  L.outbox.push(event);
  persist(L);
  const entry = { seq: event.seq, kind, key, item_id: event.item_id, class_id: event.class_id ?? null, t_key, t_shown: null };
  L.log.push(entry);
  if (L.log.length > LOG_KEPT) L.log.splice(0, L.log.length - LOG_KEPT);
  L.awaiting.push(entry);
  drawItem(L);
  drawStatus(L);
  send(L, false);
}

function send(L, force) {
  if (!L.setState) return;
  const now = performance.now();
  // One update in flight at a time: each one reruns the page, and a rerun started while another
  // runs interrupts it. The answer (an acknowledgement) releases the next; a lost one is re-sent.
  if (L.inflight && !force && now - L.sentAt < RESEND_MS) return;
  if (!L.outbox.length && L.sends > 0 && !force) return;
  L.inflight = true;
  L.sentAt = now;
  L.sends += 1;
  const have = [...L.cache.keys()];
  L.trace.push({ t: now, what: "send", n: L.sends, events: L.outbox.length });
  L.setState("update", { client: L.client, base: L.acked, events: L.outbox.slice(0, 1000), have, n: L.sends });
}

function receive(L, data) {
  L.trace.push({ t: performance.now(), what: "receive", ack: data.ack, items: (data.items || []).length, upcoming: L.upcoming.length });
  if (L.trace.length > LOG_KEPT) L.trace.splice(0, L.trace.length - LOG_KEPT);
  L.classes = data.classes || [];
  L.byKey = new Map(L.classes.filter((c) => c.key).map((c) => [c.key, c]));
  L.ready = Boolean(data.ready);
  L.annotator = data.annotator || null;
  L.model = data.model || null;
  L.empty = Boolean(data.empty);
  if (data.ack && data.ack.client === L.client) {
    L.inflight = false;
    if (data.ack.seq > L.acked) L.acked = data.ack.seq;
    // a new server knows nothing of this client; its base tells it where the outbox starts
    L.outbox = L.outbox.filter((e) => e.seq > L.acked);
    if (L.nextSeq <= L.acked) L.nextSeq = L.acked + 1;
    persist(L);
  }
  for (const r of data.rejected || []) {
    if (r.client === L.client && !L.errorsSeen.has(r.seq)) {
      L.errorsSeen.add(r.seq);
      L.message = `Not saved: ${r.error}`;
      L.labels = L.labels.filter((l) => l.seq !== r.seq);
    }
  }
  if (data.queue_key !== L.queueKey) {
    // another filter or order: what was preloaded belongs to the old queue
    L.queueKey = data.queue_key;
    L.current = null;
    L.upcoming = [];
  }
  const fresh = [];
  for (const item of data.items || []) {
    // Images the browser already holds come without their data (the update listed them in `have`).
    const known = L.cache.get(item.id);
    if (!known && !item.src) continue;
    const merged = known ? Object.assign(known, { top: item.top, why: item.why, now: item.now }) : item;
    L.cache.set(item.id, merged);
    if (L.acted.has(item.id) || (L.current && L.current.id === item.id)) continue;
    fresh.push(merged);
  }
  for (const id of L.cache.keys()) {
    if (L.cache.size <= CACHE_KEPT) break;
    L.cache.delete(id);
  }
  // The server's order is the newer one; items it no longer lists are dropped.
  L.upcoming = fresh;
  if (L.current) {
    // the server's newer guess for the image on screen came through the cache above
  } else {
    advance(L);
  }
  for (const next of L.upcoming.slice(0, 3)) preload(next);
}

// Keys typed into a text box (the annotator's name, a select's search) are text, not labels; a
// focused radio, checkbox or button (the sidebar's last click) must not swallow them.
const TEXT_INPUTS = new Set(["text", "search", "number", "password", "email", "url", "tel"]);

function typing(origin) {
  if (!origin || !origin.tagName) return false;
  const tag = origin.tagName.toLowerCase();
  if (tag === "textarea" || tag === "select" || origin.isContentEditable) return true;
  return tag === "input" && TEXT_INPUTS.has((origin.getAttribute("type") || "text").toLowerCase());
}

function onKey(L, e) {
  if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
  const origin = e.composedPath ? e.composedPath()[0] : e.target;
  if (typing(origin)) return;
  if (!L.dom || !L.dom.top.isConnected) return;
  const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  let handled = true;
  if (L.byKey.has(key)) act(L, "label", L.byKey.get(key).id, key);
  else if (key === "Enter" || key === " ") {
    const top = L.current && L.current.top.length ? L.current.top[0] : null;
    if (top) act(L, "label", top.class_id, key);
    else handled = false;
  } else if (key === "ArrowRight") act(L, "skip", null, key);
  else if (key === "Backspace") act(L, "undo", null, key);
  else handled = false;
  if (handled) {
    e.preventDefault();
    e.stopPropagation();
  }
}

export default function (component) {
  const { data, setStateValue, parentElement } = component;
  const L = (window.__labeller = window.__labeller || createState());
  L.setState = setStateValue;
  L.trace.push({ t: performance.now(), what: "invoke", ack: data && data.ack });
  if (!L.dom || L.dom.top.getRootNode() !== parentElement.getRootNode() || !L.dom.top.isConnected) {
    const old = parentElement.querySelector("[data-labeller]");
    if (old) old.remove();
    L.dom = build(L, parentElement);
    L.dom.top.style.setProperty("--lk-image-height", `${data.image_height || 560}px`);
  }
  receive(L, data || {});
  drawClasses(L);
  drawItem(L);
  drawStatus(L);
  if (!L.listener) {
    L.listener = (e) => onKey(L, e);
    // capture: the keys reach the labeller before Streamlit's own shortcuts
    document.addEventListener("keydown", L.listener, true);
  }
  if (!L.timer) {
    L.timer = window.setInterval(() => {
      claim(L.client); // the heartbeat of this page's claim
      if (L.outbox.length) send(L, false);
    }, RESEND_MS / 3);
  }
  if (!L.released) {
    L.released = () => release(L.client);
    window.addEventListener("pagehide", L.released);
  }
  // the first update introduces the client (and replays an outbox kept over a reload)
  if (L.sends === 0 || (L.outbox.length && !L.inflight)) send(L, L.sends === 0);
  return () => {
    L.trace.push({ t: performance.now(), what: "cleanup" });
    document.removeEventListener("keydown", L.listener, true);
    L.listener = null;
    window.clearInterval(L.timer);
    L.timer = null;
    L.dom = null;
  };
}
