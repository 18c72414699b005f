// fieldmesh web UI. Plain JavaScript, no library. Every piece of text from the node goes into the page
// with textContent (never as HTML). Message text, patient references and team names travel only in
// POST bodies and JSON answers: URLs carry ids only, and nothing is put in the address bar or history.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const PAGE = 100;
const state = {
  csrf: "", me: "", device: "", teams: [], team: null, msgs: [], more: false, replyTo: null,
  view: "teams", tab: "chat", safetyMember: null, loading: false, loaded: false,
};

const $ = (id) => document.getElementById(id);

// safe returns text as it was written: every bidirectional control and invisible format character
// (Unicode properties Bidi_Control and Cf; joiners aside) shows as a visible <U+XXXX> mark, so
// "dose 5<U+202E>01 mg" cannot read as another dose (sync/safetext's Display, by the same properties).
function safe(v) {
  return String(v).replace(/[\p{Bidi_Control}\p{Cf}]/gu, (c) => (c === "\u200d" || c === "\u200c") ? c
    : "<U+" + c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0") + ">");
}

function el(tag, props, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = safe(v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}

// ---- talking to the node ----

class APIError extends Error {
  constructor(status, msg) { super(msg); this.status = status; }
}

async function api(method, path, body) {
  const opts = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  if (method !== "GET") opts.headers["X-Fieldmesh-CSRF"] = state.csrf;
  // Only what the user does (a POST) keeps the device unlocked; the page's own reads do not.
  else opts.headers["X-Fieldmesh-Background"] = "1";
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    throw new APIError(0, "the node does not answer: is fieldmesh up still running?");
  }
  let data = null;
  try { data = await res.json(); } catch (e) { /* no body */ }
  if (!res.ok) {
    if (res.status === 401) showSignIn();
    if (res.status === 423 && data && data.locked) showLocked();
    throw new APIError(res.status, (data && data.error) || ("the node answered " + res.status));
  }
  return data;
}

// Our Go packages prefix their errors with their names ("humancode: "), which mean nothing to the
// reader; the command line drops them the same way (cmd/fieldmesh errorPrefixes).
const PKG_PREFIX = /(^|: )(?:adversary|crdt|device|envelope|epochkey|fieldmesh|framing|humancode|identity|join|localapi|lowdata|meshconf|node|recon|relay|relayclient|relayproto|safety|seal|senderkey|storage|teamkeys|unixapi|usage|webui|wire|locked|session|wipeorder|wipeproto): /g;

function showError(what, err) {
  const e = $("error");
  let msg = err && err.message ? err.message : String(err);
  for (let prev = ""; prev !== msg;) { prev = msg; msg = msg.replace(PKG_PREFIX, "$1"); }
  msg = msg.replace(/\s+/g, " ").trim();
  e.textContent = what + ": " + msg + (/[.!?)]$/.test(msg) ? "" : ".");
  e.hidden = false;
}
function clearError() { $("error").hidden = true; $("error").textContent = ""; }

function q(params) {
  return Object.entries(params).filter(([, v]) => v !== "" && v != null)
    .map(([k, v]) => encodeURIComponent(k) + "=" + encodeURIComponent(v)).join("&");
}

// ---- views ----

function showView(name) {
  state.view = name;
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + name;
  for (const b of document.querySelectorAll(".nav")) {
    if (b.dataset.view === name || (name === "team" && b.dataset.view === "teams")) b.setAttribute("aria-current", "page");
    else b.removeAttribute("aria-current");
  }
}

// showLocked shows the lock screen. A page that showed content is reloaded first, so nothing of it is
// left in the page behind the lock screen.
function showLocked() {
  if (state.shown) { location.reload(); return; }
  if (events) { events.close(); events = null; }
  document.body.classList.add("locked");
  showView("locked");
  $("conn").textContent = "locked";
  $("unlock-pass").focus();
}

async function lockNow() {
  clearError();
  try {
    await api("POST", "/api/v1/lock", {});
  } catch (e) { showError("Not locked", e); return; }
  state.shown = true;
  showLocked();
}

async function unlock(ev) {
  ev.preventDefault();
  clearError();
  const input = $("unlock-pass");
  try {
    await api("POST", "/api/v1/unlock", { passphrase: input.value });
  } catch (e) {
    input.value = "";
    showError(e.status === 403 ? "Not unlocked (wrong passphrase)" : "Not unlocked", e);
    return;
  }
  input.value = "";
  document.body.classList.remove("locked");
  start();
}

function showSignIn() {
  showView("signin");
  $("conn").textContent = "not signed in";
}

const TABS = ["chat", "members", "invite"];

function showTab(tab) {
  state.tab = tab;
  for (const t of TABS) {
    $("tab-" + t).setAttribute("aria-selected", String(t === tab));
    $("tab-" + t).tabIndex = t === tab ? 0 : -1; // one tab stop; arrows move between tabs
    $("pane-" + t).hidden = t !== tab;
  }
  if (tab === "members") loadMembers().catch((e) => showError("Could not load the members", e));
}

// ---- teams ----

async function loadTeams() {
  state.teams = await api("GET", "/api/v1/teams");
  const list = $("team-list");
  list.replaceChildren();
  for (const t of state.teams) {
    const meta = [t.kind, t.members + (t.members === 1 ? " member" : " members"),
      t.messages + (t.messages === 1 ? " message" : " messages")];
    if (t.admin) meta.push("you are an admin");
    if (t.removed) meta.push("you were removed");
    list.append(el("li", {}, el("button", { type: "button", class: "team-btn", "data-team": t.id, onclick: () => openTeam(t.id) },
      el("span", { class: "name", text: t.name }), el("span", { class: "meta", text: meta.join(" · ") }))));
  }
  $("no-teams").hidden = state.teams.length > 0;
  if (state.team) {
    const t = currentTeam();
    if (t) $("team-h").textContent = safe(t.name);
  }
}

function currentTeam() { return state.teams.find((t) => t.id === state.team); }

async function openTeam(id) {
  clearError();
  state.team = id;
  state.msgs = [];
  state.more = false;
  state.loaded = false;
  $("announce").textContent = "";
  setReply(null);
  $("messages").replaceChildren();
  $("invite-out").hidden = true;
  $("safety").hidden = true;
  const t = currentTeam();
  $("team-h").textContent = t ? safe(t.name) : "";
  showView("team");
  showTab("chat");
  try {
    await refreshMessages(true);
  } catch (e) {
    showError("Could not load the conversation", e);
  }
  $("compose-text").focus();
}

// ---- conversation ----

function nearBottom() {
  const d = document.scrollingElement;
  return d.scrollHeight - d.scrollTop - d.clientHeight < 120;
}

// refreshMessages fetches the newest messages (as many as are shown, within the server's page limit)
// and merges them with the older ones already shown.
async function refreshMessages(scroll) {
  const team = state.team;
  const limit = Math.min(500, Math.max(PAGE, state.msgs.length));
  const stick = scroll || nearBottom();
  const page = await api("GET", "/api/messages?" + q({ team, limit }));
  if (team !== state.team) return;
  const fresh = new Set(page.messages.map((m) => m.id));
  let keep = [];
  if (state.msgs.length > page.messages.length) {
    const firstIdx = state.msgs.findIndex((m) => fresh.has(m.id));
    const cut = firstIdx < 0 ? state.msgs.length : firstIdx;
    keep = state.msgs.slice(0, cut).filter((m) => !fresh.has(m.id));
  }
  const known = new Set(state.msgs.map((m) => m.id));
  const arrived = state.loaded ? page.messages.filter((m) => !known.has(m.id) && m.author !== state.device) : [];
  state.msgs = keep.concat(page.messages);
  if (keep.length === 0) state.more = page.more;
  state.loaded = true;
  // Screen readers hear who wrote what arrived, not the whole list again.
  if (arrived.length) {
    $("announce").textContent = arrived.length === 1
      ? "New message from " + safe(arrived[0].author_name)
      : arrived.length + " new messages";
  }
  renderMessages();
  if (stick) window.scrollTo(0, document.scrollingElement.scrollHeight);
}

async function loadOlder() {
  if (!state.msgs.length || state.loading) return;
  state.loading = true;
  try {
    const team = state.team;
    const page = await api("GET", "/api/messages?" + q({ team, before: state.msgs[0].id, limit: PAGE }));
    if (team !== state.team) return;
    const d = document.scrollingElement;
    const fromBottom = d.scrollHeight - d.scrollTop;
    state.msgs = page.messages.concat(state.msgs);
    state.more = page.more;
    renderMessages();
    d.scrollTop = d.scrollHeight - fromBottom;
  } catch (e) {
    showError("Could not load older messages", e);
  } finally {
    state.loading = false;
  }
}

function gist(m) {
  const t = m.text.replace(/\s+/g, " ");
  return m.author_name + ": " + (t.length > 60 ? t.slice(0, 57) + "…" : t);
}

function fmtTime(s) {
  const d = new Date(s);
  return isNaN(d) ? s : d.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

function renderMessages() {
  const byId = new Map(state.msgs.map((m) => [m.id, m]));
  const ol = $("messages");
  ol.replaceChildren();
  for (const m of state.msgs) {
    const cls = ["msg"];
    if (m.priority !== "routine") cls.push(m.priority);
    if (m.author === state.device) cls.push("mine");
    const head = el("div", { class: "head" },
      el("span", { class: "who", text: m.author_name }),
      el("time", { datetime: m.time, text: fmtTime(m.time) }));
    if (m.priority !== "routine") head.append(el("span", { class: "prio", text: m.priority }));
    if (m.patient) head.append(el("span", { class: "patient", text: "Patient: " + m.patient }));
    const li = el("li", { class: cls.join(" "), "data-id": m.id }, head);
    if (m.reply_to) {
      const p = byId.get(m.reply_to);
      li.append(el("div", { class: "re", text: "↳ reply to " + (p ? gist(p) : "message " + m.reply_to.slice(0, 8)) }));
    }
    li.append(el("p", { class: "text", text: m.text }));
    let status;
    if (m.filed_to) status = "Filed to record " + m.filed_to + " (deleted here a day after filing)";
    else if (m.queued) status = "Queued: not sent yet (low-data mode)";
    else if (m.read_by && m.read_by.length) status = "Read by " + m.read_by.join(", ");
    else if (m.received_by && m.received_by.length) status = "Received by " + m.received_by.join(", ");
    else status = "Not yet received by anyone";
    li.append(el("div", { class: "foot" },
      el("span", { class: "status", text: status }),
      el("button", { type: "button", class: "link", "aria-label": "Reply to " + m.author_name + "'s message",
        onclick: () => { setReply(m); $("compose-text").focus(); } }, "Reply")));
    ol.append(li);
  }
  $("older").hidden = !state.more;
}

function setReply(m) {
  state.replyTo = m ? m.id : null;
  $("replying").hidden = !m;
  $("replying-text").textContent = m ? "Replying to " + safe(gist(m)) + " " : "";
}

async function send(ev) {
  ev.preventDefault();
  clearError();
  const text = $("compose-text").value;
  if (!text.trim()) { showError("Not sent", "write a message first"); return; }
  const btn = $("send");
  btn.disabled = true;
  try {
    await api("POST", "/api/v1/send", {
      team: state.team, text, priority: $("compose-priority").value,
      patient: $("compose-patient").value.trim(), reply_to: state.replyTo || "",
    });
    $("compose-text").value = "";
    $("compose-patient").value = "";
    $("compose-priority").value = "routine";
    setReply(null);
    await refreshMessages(true);
  } catch (e) {
    showError("Not sent (your text is still in the box)", e);
  } finally {
    btn.disabled = false;
    $("compose-text").focus();
  }
}

// ---- members ----

async function loadMembers() {
  const ms = await api("GET", "/api/v1/members?" + q({ team: state.team }));
  const t = currentTeam();
  const admin = t && t.admin && !t.removed;
  const list = $("member-list");
  list.replaceChildren();
  for (const m of ms) {
    const name = el("strong", { text: m.name });
    const li = el("li", { class: "member" }, name);
    if (m.self) li.append(el("span", { class: "badge", text: "you" }));
    if (m.admin) li.append(el("span", { class: "badge", text: "admin" }));
    if (!m.self) {
      const warn = m.verification === "keys-changed" || (m.equivocated && m.equivocated.length);
      li.append(el("span", { class: "badge" + (warn ? " warn" : ""), text: m.verification }));
    }
    const devs = el("ul", { class: "devs", "aria-label": "Devices of " + m.name });
    for (const d of m.devices || []) {
      const row = el("li", {}, (d.label || "device") + " (" + d.short + ") ");
      if (m.self || admin) {
        row.append(el("button", { type: "button", class: "link", "aria-label": "Remove device " + d.short + " of " + m.name,
          onclick: () => membership("Remove device " + d.short + " of " + m.name + "?", "/api/v1/devices/remove", { team: state.team, device: d.id }) }, "Remove device"));
      }
      devs.append(row);
    }
    li.append(devs);
    const actions = el("div", { class: "actions" });
    if (!m.self) actions.append(el("button", { type: "button", "aria-label": "Safety number with " + m.name, onclick: () => showSafety(m) }, "Safety number"));
    if (admin && !m.admin) actions.append(el("button", { type: "button", "aria-label": "Make " + m.name + " an admin",
      onclick: () => membership("Make " + m.name + " an admin?", "/api/v1/members/promote", { team: state.team, member: m.id }) }, "Make admin"));
    if (admin && !m.self) actions.append(el("button", { type: "button", "aria-label": "Remove " + m.name + " from the team",
      onclick: () => membership("Remove " + m.name + " from the team? Their devices will not read anything sent after this.", "/api/v1/members/remove", { team: state.team, member: m.id }) }, "Remove"));
    if (actions.childElementCount) li.append(actions);
    list.append(li);
  }
}

async function membership(question, path, body) {
  if (!window.confirm(question)) return;
  clearError();
  try {
    await api("POST", path, body);
    await Promise.all([loadMembers(), loadTeams()]);
  } catch (e) {
    showError("Not done", e);
  }
}

async function showSafety(m, mark) {
  clearError();
  state.safetyMember = m;
  try {
    const nums = await api("POST", "/api/v1/verify", { team: state.team, member: m.id, mark: !!mark });
    $("safety-h").textContent = "Safety numbers with " + safe(m.name);
    const box = $("safety-list");
    box.replaceChildren();
    for (const n of nums) {
      const qr = el("div", { class: "qr" });
      box.append(el("div", {},
        el("p", { text: (n.label || "device") + (n.verified ? " — verified" : "") + (n.changed ? " — KEY CHANGED since you verified" : "") }),
        el("p", { class: "number", text: n.number }), qr));
      drawQR(qr, n.qr, "QR code of the safety number with " + m.name).catch(() => {});
    }
    $("safety").hidden = false;
    $("safety-h").scrollIntoView();
    if (mark) await loadMembers();
  } catch (e) {
    showError("Could not show the safety number", e);
  }
}

async function drawQR(box, text, label) {
  const c = await api("POST", "/api/qr", { text });
  const n = c.size + 8;
  const svg = document.createElementNS(SVGNS, "svg");
  svg.setAttribute("viewBox", "-4 -4 " + n + " " + n);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  svg.setAttribute("shape-rendering", "crispEdges");
  const bg = document.createElementNS(SVGNS, "rect");
  for (const [k, v] of [["x", -4], ["y", -4], ["width", n], ["height", n], ["fill", "#fff"]]) bg.setAttribute(k, v);
  const p = document.createElementNS(SVGNS, "path");
  p.setAttribute("d", c.path);
  p.setAttribute("fill", "#000");
  svg.append(bg, p);
  box.replaceChildren(svg);
}

// ---- invite ----

async function makeCode(kind) {
  clearError();
  const ttl = $("invite-ttl").value;
  try {
    const inv = kind === "link"
      ? await api("POST", "/api/v1/devices/link", { team: state.team, ttl })
      : await api("POST", "/api/v1/invite", { team: state.team, ttl });
    $("invite-what").textContent = (kind === "link"
      ? "Enter this code on your new device (Join a team). "
      : "Give this code to the person you invite, in person or by a trusted channel. ") +
      "It works once, until " + fmtTime(inv.expires) + ".";
    $("invite-code").textContent = inv.code;
    $("invite-out").hidden = false;
    await drawQR($("invite-qr"), inv.code, "QR code of the " + (kind === "link" ? "link" : "invite") + " code");
  } catch (e) {
    showError(kind === "link" ? "No link code made" : "No invite code made", e);
  }
}

// ---- status, relays, low data ----

function ago(s) {
  if (!s) return "never";
  return fmtTime(s);
}

async function loadStatus() {
  const st = await api("GET", "/api/v1/status");
  $("lowdata").checked = st.low_data.on;
  const ld = st.low_data;
  $("lowdata-summary").textContent = ld.on
    ? "Low-data mode is on: routine messages wait (" + ld.queued + " waiting) and only urgent ones go out now."
    : "Low-data mode is off: messages go out as soon as they are written.";
  $("sync-summary").textContent = st.peers + (st.peers === 1 ? " peer" : " peers") + " connected; " +
    st.sync.sessions + " catch-up sessions since start (" + st.sync.envelopes_received + " messages received).";
  const names = new Map(state.teams.map((t) => [t.id, t.name]));
  const rows = $("relay-rows");
  rows.replaceChildren();
  for (const r of st.relays) {
    const waiting = Object.entries(r.waiting || {}).filter(([, n]) => n > 0)
      .map(([id, n]) => (names.get(id) || id.slice(0, 8)) + ": " + n).join(", ") || "nothing";
    const short = r.peer_id.slice(-10);
    rows.append(el("tr", {},
      el("td", {}, el("code", { text: short }), " ",
        el("button", { type: "button", class: "link", "aria-label": "Stop using relay " + short,
          onclick: () => forgetRelay(r.peer_id, short) }, "Stop using")),
      el("td", { text: r.connected ? "yes" : "no" }),
      el("td", { text: ago(r.last_contact) }),
      el("td", { text: ago(r.last_sync) + (r.last_error ? " (last error: " + r.last_error + ")" : "") }),
      el("td", { text: waiting })));
  }
  $("relay-table").hidden = st.relays.length === 0;
  $("no-relays").hidden = st.relays.length > 0;
}

async function forgetRelay(id, short) {
  if (!window.confirm("Stop using relay " + short + "? It is forgotten until it is given again (or a team admin's relay op names it).")) return;
  clearError();
  try {
    await api("POST", "/api/v1/relays/forget", { relay: id });
    await loadStatus();
  } catch (e) {
    showError("The relay is still in use", e);
  }
}

async function setLowData() {
  clearError();
  const on = $("lowdata").checked;
  try {
    await api("POST", "/api/v1/low-data", { on });
    await loadStatus();
  } catch (e) {
    $("lowdata").checked = !on;
    showError("Low-data mode not changed", e);
  }
}

// ---- data usage ----

function fmtBytes(n) {
  if (n < 1024) return n + " B";
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
  return (n / 1024 / 1024).toFixed(1) + " MiB";
}

async function loadUsage() {
  const month = $("usage-month").value;
  const rep = await api("GET", "/api/v1/usage" + (month ? "?" + q({ month }) : ""));
  if (!month) $("usage-month").value = rep.month;
  $("usage-total").textContent = rep.month + ": " + fmtBytes(rep.total.total) + " in all (" +
    fmtBytes(rep.total.sent) + " sent, " + fmtBytes(rep.total.received) + " received).";
  // Every day of the month has a bar, so one busy day does not fill the chart.
  const byDate = new Map((rep.days || []).map((d) => [d.date, d]));
  const [yy, mm] = rep.month.split("-").map(Number);
  const days = [];
  for (let i = 1; i <= new Date(yy, mm, 0).getDate(); i++) {
    const date = rep.month + "-" + String(i).padStart(2, "0");
    days.push(byDate.get(date) || { date, sent: 0, received: 0, total: 0 });
  }
  const max = Math.max(1, ...days.map((d) => d.total));
  const w = 10, gap = 2, h = 100;
  const svg = document.createElementNS(SVGNS, "svg");
  svg.setAttribute("viewBox", "0 0 " + Math.max(1, days.length * (w + gap)) + " " + h);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "Bytes per day in " + rep.month + "; busiest day " + fmtBytes(max));
  svg.setAttribute("width", "100%");
  svg.setAttribute("height", "100%");
  days.forEach((d, i) => {
    const g = document.createElementNS(SVGNS, "g");
    const title = document.createElementNS(SVGNS, "title");
    title.textContent = d.date + ": " + fmtBytes(d.sent) + " sent, " + fmtBytes(d.received) + " received";
    g.append(title);
    const rh = (d.received / max) * h, sh = (d.sent / max) * h;
    for (const [y, hh, fill] of [[h - rh, rh, "#7fb2e5"], [h - rh - sh, sh, "#1a5fb4"]]) {
      const r = document.createElementNS(SVGNS, "rect");
      for (const [k, v] of [["x", i * (w + gap)], ["y", y], ["width", w], ["height", hh], ["fill", fill]]) r.setAttribute(k, v);
      g.append(r);
    }
    svg.append(g);
  });
  const chart = $("usage-chart");
  chart.replaceChildren(svg);
  $("usage-axis").replaceChildren(el("span", { text: days[0].date }), el("span", { text: days[days.length - 1].date }));
}

// ---- live updates ----

let events = null;
function listen() {
  if (events) events.close();
  $("conn").textContent = "connecting…";
  events = new EventSource("/api/events");
  events.addEventListener("ready", () => { $("conn").textContent = "live"; });
  events.addEventListener("team", (ev) => {
    const { team } = JSON.parse(ev.data);
    loadTeams().catch(() => {});
    if (team === state.team && state.view === "team") {
      refreshMessages(false).catch((e) => showError("Could not update the conversation", e));
      if (state.tab === "members") loadMembers().catch(() => {});
    }
  });
  events.addEventListener("status", (ev) => {
    const d = JSON.parse(ev.data);
    if (d.teams_changed) loadTeams().catch(() => {});
    loadStatus().catch(() => {});
  });
  events.onerror = () => {
    $("conn").textContent = "reconnecting…";
    // A node that restarted has a new session: say so instead of retrying for ever.
    api("GET", "/api/session").then(() => api("GET", "/api/v1/lock")).then((l) => {
      if (l && l.locked) showLocked();
    }).catch((e) => {
      if (e.status === 401) { events.close(); showError("Signed out", "the node restarted; run \"fieldmesh open\" again"); }
    });
  };
}

// ---- start ----

async function signIn() {
  const m = /^#token=([0-9a-f]+)$/.exec(location.hash);
  // The token leaves the address bar and the history entry before anything else happens.
  if (location.hash) history.replaceState(null, "", "/");
  if (m) {
    try {
      await api("POST", "/api/login", { token: m[1] });
    } catch (e) {
      showSignIn();
      showError("Not signed in", e);
      return false;
    }
  }
  try {
    const s = await api("GET", "/api/session");
    state.csrf = s.csrf;
    state.me = s.name;
    state.device = s.device;
    return true;
  } catch (e) {
    if (e.status !== 401) showError("Not signed in", e);
    return false;
  }
}

function wire() {
  $("lock-btn").addEventListener("click", lockNow);
  $("unlock-form").addEventListener("submit", unlock);
  for (const b of document.querySelectorAll(".nav")) {
    b.addEventListener("click", () => {
      clearError();
      const v = b.dataset.view;
      if (state.csrf === "") return;
      showView(v);
      if (v === "teams") loadTeams().catch((e) => showError("Could not load your teams", e));
      if (v === "sync") loadStatus().catch((e) => showError("Could not load the sync status", e));
      if (v === "usage") loadUsage().catch((e) => showError("Could not load the data use", e));
    });
  }
  $("back").addEventListener("click", () => { state.team = null; showView("teams"); loadTeams().catch(() => {}); });
  document.querySelector("[role=tablist]").addEventListener("keydown", (ev) => {
    const i = TABS.indexOf(state.tab);
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: TABS.length - 1 }[ev.key];
    if (next === undefined) return;
    ev.preventDefault();
    const t = TABS[(next + TABS.length) % TABS.length];
    showTab(t);
    $("tab-" + t).focus();
  });
  $("tab-chat").addEventListener("click", () => showTab("chat"));
  $("tab-members").addEventListener("click", () => showTab("members"));
  $("tab-invite").addEventListener("click", () => showTab("invite"));
  $("older").addEventListener("click", loadOlder);
  $("compose").addEventListener("submit", send);
  $("compose-text").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) $("compose").requestSubmit();
  });
  $("reply-cancel").addEventListener("click", () => setReply(null));
  $("safety-close").addEventListener("click", () => { $("safety").hidden = true; });
  $("safety-mark").addEventListener("click", () => state.safetyMember && showSafety(state.safetyMember, true));
  $("invite-form").addEventListener("submit", (ev) => { ev.preventDefault(); makeCode("invite"); });
  $("link-make").addEventListener("click", () => makeCode("link"));
  $("lowdata").addEventListener("change", setLowData);
  $("sync-now").addEventListener("click", async () => {
    clearError();
    try {
      const r = await api("POST", "/api/v1/sync", {});
      await loadStatus();
      $("sync-summary").textContent += " Synced with " + r.synced + " now.";
    } catch (e) { showError("Sync did not run", e); }
  });
  $("usage-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    clearError();
    loadUsage().catch((e) => showError("Could not load the data use", e));
  });
  $("create-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearError();
    try {
      const t = await api("POST", "/api/v1/teams", { name: $("create-name").value, kind: $("create-kind").value });
      $("create-name").value = "";
      await loadTeams();
      listen(); // watch the new team too
      openTeam(t.id);
    } catch (e) { showError("No team created", e); }
  });
  $("join-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearError();
    try {
      const t = await api("POST", "/api/v1/join", { code: $("join-code").value.trim() });
      $("join-code").value = "";
      await loadTeams();
      listen();
      openTeam(t.id);
    } catch (e) { showError("Not joined (check the code, and that the inviter's device is reachable)", e); }
  });
}

async function start() {
  clearError();
  if (!(await signIn())) { showSignIn(); return; }
  try {
    const l = await api("GET", "/api/v1/lock");
    if (l.locked) { showLocked(); return; }
  } catch (e) { if (e.status === 423) return; }
  showView("teams");
  try {
    await Promise.all([loadTeams(), loadStatus()]);
  } catch (e) {
    if (e.status === 423) return;
    showError("Could not load your teams", e);
  }
  state.shown = true;
  listen();
}

wire();
// A sign-in address opened in a tab that shows the page already changes only the fragment.
window.addEventListener("hashchange", () => { if (location.hash.startsWith("#token=")) start(); });
start();
