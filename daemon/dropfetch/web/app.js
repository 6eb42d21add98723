// dropfetch's web page: the jobs of GET /archive, live from GET /events (polling when
// the stream is down), a form that POSTs job files, and the job buttons.
// Every text that comes from a job (name, URL, error, file names) is set with
// textContent, never parsed as HTML.
"use strict";

const PAGE = 100; // jobs per page
const POLL_MS = 3000; // polling interval while the event stream is down
const REFRESH_MS = 30000; // a full look at the page even while the stream is up
const CHUNK = 25; // rows built per animation frame
const TOKEN_KEY = "dropfetch.token";
const ACTIONS = [
  ["retry", "Retry", (s) => ["failed", "ok", "waiting"].includes(s)],
  ["pause", "Pause", (s) => ["queued", "downloading", "unpacking", "waiting"].includes(s)],
  ["resume", "Resume", (s) => s === "paused"],
  ["delete", "Delete", (s) => s !== "deleting"],
];

const state = {
  token: localStorage.getItem(TOKEN_KEY) || "",
  offset: 0,
  total: 0,
  filter: "",
  rows: new Map(), // job id -> row element
  order: [], // ids shown, in order
  render: 0, // generation of the rendering under way
  stream: null,
  pollTimer: 0,
  reloadTimer: 0,
  started: false,
};

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

// -- the API ---------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = {};
  if (state.token) headers.Authorization = "Bearer " + state.token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let answer;
  try {
    answer = await fetch(path, {
      method, headers, credentials: "same-origin", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, "the daemon cannot be reached (" + err.message + ")");
  }
  let data = null;
  try {
    data = await answer.json();
  } catch (err) {
    data = null;
  }
  if (answer.status === 401) {
    needToken(state.token ? "The token was refused: check it and try again." : "");
    throw new ApiError(401, "a token is needed");
  }
  if (!answer.ok) {
    const why = data && typeof data.error === "string" ? data.error : answer.statusText;
    throw new ApiError(answer.status, why || "HTTP " + answer.status);
  }
  return { data, headers: answer.headers };
}

// -- the token ---------------------------------------------------------------------------

function needToken(message) {
  stopLive();
  $("app").hidden = true;
  $("login").hidden = false;
  $("forget").hidden = true;
  $("login-error").textContent = message;
  $("token").focus();
}

async function signIn(event) {
  event.preventDefault();
  state.token = $("token").value.trim();
  $("login-error").textContent = "";
  try {
    await api("GET", "/archive?limit=1");
  } catch (err) {
    if (err.status !== 401) $("login-error").textContent = err.message;
    return;
  }
  localStorage.setItem(TOKEN_KEY, state.token);
  $("token").value = "";
  start();
}

function forgetToken() {
  localStorage.removeItem(TOKEN_KEY);
  state.token = "";
  needToken("");
}

// -- formatting (pure) -----------------------------------------------------------------

function bytes(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return (i === 0 ? String(n) : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
}

function duration(s) {
  s = Math.round(s);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function figures(job) {
  const parts = [];
  if (job.bytes_total) parts.push(bytes(job.bytes_done) + " of " + bytes(job.bytes_total));
  else if (job.bytes_done) parts.push(bytes(job.bytes_done));
  if (job.status === "downloading" && job.speed) parts.push(bytes(job.speed) + "/s");
  if (job.status === "downloading" && job.eta !== null && job.eta !== undefined) {
    parts.push(duration(job.eta) + " left");
  }
  if (job.status === "waiting" && job.next_attempt_at) {
    parts.push("next try " + new Date(job.next_attempt_at).toLocaleTimeString());
  }
  if (job.attempt > 1) parts.push("try " + job.attempt);
  return parts.join(" · ");
}

// -- one job's row -----------------------------------------------------------------------

function makeRow(id) {
  const row = el("li", "job");
  row.dataset.id = id;
  const head = el("div", "head");
  row._name = head.appendChild(el("span", "name", id));
  row._status = head.appendChild(el("span", "status"));
  row.appendChild(head);
  row._progress = row.appendChild(el("progress"));
  row._progress.max = 100;
  row._progress.setAttribute("aria-label", "progress of " + id);
  row._figures = row.appendChild(el("div", "figures"));
  row._url = row.appendChild(el("div", "url"));
  row._error = row.appendChild(el("p", "error"));
  row._files = row.appendChild(el("details", "files"));
  row._files.hidden = true;
  row._files.appendChild(el("summary"));
  row._files.appendChild(el("ul"));
  row._files.addEventListener("toggle", () => showFiles(row));
  const actions = row.appendChild(el("div", "actions"));
  row._buttons = {};
  for (const [action, label] of ACTIONS) {
    const button = actions.appendChild(el("button", action, label));
    button.type = "button";
    button.setAttribute("aria-label", label + " " + id);
    button.addEventListener("click", () => act(row, action));
    row._buttons[action] = button;
  }
  row._note = row.appendChild(el("p", "note"));
  return row;
}

function updateRow(row, job) {
  row._job = job;
  row.dataset.status = job.status;
  row._status.textContent = job.status;
  const bar = row._progress;
  if (job.status === "ok") bar.value = 100;
  else if (job.progress === null || job.progress === undefined) {
    if (job.status === "downloading" || job.status === "unpacking") bar.removeAttribute("value");
    else bar.value = 0;
  } else bar.value = job.progress;
  bar.hidden = job.status === "failed" || job.status === "deleting";
  bar.setAttribute("aria-valuetext", bar.hasAttribute("value") ? bar.value + "%" : "unknown");
  row._figures.textContent = figures(job);
  row._url.textContent = job.url || "";
  const err = job.error;
  row._error.textContent = err ? err.message + (err.code ? " (" + err.code + ")" : "") : "";
  const files = job.status === "ok" && Array.isArray(job.files) ? job.files : [];
  row._files.hidden = files.length === 0;
  row._files.firstChild.textContent = files.length + (files.length === 1 ? " file" : " files");
  if (row._files.open) showFiles(row);
  for (const [action, , fits] of ACTIONS) row._buttons[action].hidden = !fits(job.status);
}

function showFiles(row) {
  const list = row._files.lastChild;
  if (!row._files.open) { list.replaceChildren(); return; }
  const files = (row._job && row._job.files) || [];
  const items = files.map((name) => el("li", "", name));
  list.replaceChildren(...items);
}

async function act(row, action) {
  const id = row.dataset.id;
  const path = "/archive/" + encodeURIComponent(id) + (action === "delete" ? "" : "/" + action);
  row._note.className = "note";
  row._note.textContent = action + "…";
  try {
    const { data } = await api(action === "delete" ? "DELETE" : "POST", path);
    if (data && data.status) updateRow(row, data);
    if (action === "delete") setTimeout(load, 3000); // gone once the daemon has purged it
    row._note.textContent = action + ": done" + (data && data.status ? " (" + data.status + ")" : "");
  } catch (err) {
    if (err.status === 401) return;
    row._note.className = "note bad";
    row._note.textContent = action + " refused: " + err.message;
  }
}

// -- the list --------------------------------------------------------------------------

function query() {
  let q = "/archive?limit=" + PAGE + "&offset=" + state.offset;
  if (state.filter) q += "&status=" + encodeURIComponent(state.filter);
  return q;
}

async function load() {
  if ($("app").hidden) return false;
  let got;
  try {
    got = await api("GET", query());
  } catch (err) {
    if (err.status !== 401) $("list-error").textContent = "Cannot list the jobs: " + err.message;
    return false;
  }
  $("list-error").textContent = "";
  let jobs = Array.isArray(got.data) ? got.data : [];
  const counted = got.headers.get("X-Total-Count");
  if (counted === null) { // a daemon that does not page: page here
    if (state.filter) jobs = jobs.filter((j) => j.status === state.filter);
    state.total = jobs.length;
    jobs = jobs.slice(state.offset, state.offset + PAGE);
  } else {
    state.total = Number(counted);
    jobs = jobs.slice(0, PAGE);
  }
  if (state.offset > 0 && state.offset >= state.total) {
    state.offset = Math.max(0, Math.floor((state.total - 1) / PAGE) * PAGE);
    return load();
  }
  show(jobs);
  return true;
}

function show(jobs) {
  const generation = ++state.render;
  const ids = jobs.map((j) => j.id);
  const same = ids.length === state.order.length && ids.every((id, i) => id === state.order[i]);
  const list = $("jobs");
  if (!same) {
    const keep = new Set(ids);
    for (const id of state.rows.keys()) if (!keep.has(id)) state.rows.delete(id);
    list.replaceChildren();
    state.order = ids;
  }
  pagerText();
  $("empty").hidden = jobs.length > 0;
  let i = 0;
  const step = () => { // a few rows per frame: the page never blocks
    if (generation !== state.render) return;
    const part = document.createDocumentFragment();
    for (const end = Math.min(i + CHUNK, jobs.length); i < end; i += 1) {
      let row = state.rows.get(jobs[i].id);
      if (!row) { row = makeRow(jobs[i].id); state.rows.set(jobs[i].id, row); }
      updateRow(row, jobs[i]);
      if (!same) part.appendChild(row);
    }
    list.appendChild(part);
    if (i < jobs.length) requestAnimationFrame(step);
  };
  step();
}

function pagerText() {
  const first = state.total ? state.offset + 1 : 0;
  const last = Math.min(state.offset + PAGE, state.total);
  $("count").textContent = state.total ? first + "–" + last + " of " + state.total + (state.total === 1 ? " job" : " jobs") : "";
  $("prev").disabled = state.offset === 0;
  $("next").disabled = state.offset + PAGE >= state.total;
}

function reloadSoon() {
  if (state.reloadTimer) return;
  state.reloadTimer = setTimeout(() => { state.reloadTimer = 0; load(); }, 500);
}

// -- live updates --------------------------------------------------------------------------

function onChange(event) {
  let job;
  try { job = JSON.parse(event.data); } catch (err) { return; }
  const row = job && state.rows.get(job.id);
  if (row && (!state.filter || job.status === state.filter)) updateRow(row, job);
  else reloadSoon(); // a new job, or one that leaves the filtered list
  if (job && job.status === "deleting") setTimeout(load, 3000);
}

async function startStream() {
  if (state.stream || !window.EventSource || $("app").hidden) return;
  if (state.token) { // the cookie EventSource sends, since it cannot send a header
    try { await api("POST", "/session"); } catch (err) { /* no cookie: polling then */ }
  }
  const stream = new EventSource("/events");
  state.stream = stream;
  stream.onopen = () => { setLive(true); stopPolling(); load(); };
  stream.onmessage = onChange;
  stream.addEventListener("overflow", () => load());
  stream.onerror = () => {
    setLive(false);
    startPolling();
    if (stream.readyState === EventSource.CLOSED) { // refused: try again later
      state.stream = null;
      setTimeout(startStream, REFRESH_MS);
    }
  };
}

function startPolling() {
  if (!state.pollTimer) state.pollTimer = setInterval(load, POLL_MS);
}

function stopPolling() {
  clearInterval(state.pollTimer);
  state.pollTimer = 0;
}

function stopLive() {
  stopPolling();
  if (state.stream) { state.stream.close(); state.stream = null; }
  setLive(false, "");
}

function setLive(on, text) {
  const live = $("live");
  live.className = "live " + (on ? "on" : "off");
  live.textContent = text !== undefined ? text : on ? "live" : "updating every " + POLL_MS / 1000 + " s";
}

// -- adding jobs ---------------------------------------------------------------------------

function options() {
  const opts = {};
  const text = (id) => $(id).value.trim();
  if (text("opt-name")) opts.name = text("opt-name");
  if (text("opt-filename")) opts.filename = text("opt-filename");
  if (text("opt-sha256")) opts.sha256 = text("opt-sha256");
  if (text("opt-checksum")) opts.checksum = text("opt-checksum");
  if (text("opt-checksum-url")) opts.checksum_url = text("opt-checksum-url");
  const mirrors = urlLines($("opt-mirrors").value);
  if (mirrors.length) opts.mirrors = mirrors;
  if ($("opt-extract").value !== "auto") opts.extract = $("opt-extract").value === "true";
  if ($("opt-keep").checked) opts.keep_archive = true;
  if (text("opt-segments")) opts.segments = Number(text("opt-segments"));
  if ($("opt-priority").value !== "normal") opts.priority = $("opt-priority").value;
  if ($("opt-password").value) opts.password = $("opt-password").value; // as typed: spaces count
  const headers = headerLines($("opt-headers").value);
  if (Object.keys(headers).length) opts.headers = headers;
  return opts;
}

// "Name: value" per line -> {Name: value}; a line without a colon goes as it is, so
// the daemon refuses it (without quoting it back)
function headerLines(text) {
  const out = {};
  for (const line of text.split(/\r?\n/)) {
    if (!line.trim()) continue;
    const at = line.indexOf(":");
    if (at < 0) out[line.trim()] = "";
    else out[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return out;
}

function urlLines(text) {
  return text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
}

async function submit(urls) {
  const result = $("add-result");
  result.replaceChildren();
  const opts = options();
  if (opts.name && urls.length > 1) {
    result.appendChild(el("li", "bad", "A name fits one URL only: leave it empty for many."));
    return urls;
  }
  const left = [];
  for (const url of urls) {
    try {
      const { data } = await api("POST", "/archive", { url, ...opts });
      result.appendChild(el("li", "", "Added " + (data && data.id ? data.id : url)));
    } catch (err) {
      if (err.status === 401) return urls;
      result.appendChild(el("li", "bad", url + ": " + err.message));
      left.push(url);
    }
  }
  reloadSoon();
  return left;
}

async function addFromForm(event) {
  event.preventDefault();
  const urls = urlLines($("urls").value);
  if (!urls.length) {
    $("add-result").replaceChildren(el("li", "bad", "Paste a URL first."));
    return;
  }
  $("add-button").disabled = true;
  try {
    $("urls").value = (await submit(urls)).join("\n"); // what failed stays, to fix
  } finally {
    $("add-button").disabled = false;
  }
}

// A dropped link file (the daemon's dropfetch.linkfiles, for the page): a plain first line,
// a Windows Internet Shortcut, a macOS .webloc (an XML or a binary property list) or a
// freedesktop .desktop of Type=Link; {url} or {error}, "no URL found" when there is none
function linkFile(name, buffer) {
  const bytes = new Uint8Array(buffer);
  let url;
  if (asciiAt(bytes, 0, 8) === "bplist00") url = bplistUrl(bytes);
  else {
    const text = new TextDecoder().decode(bytes);
    const first = urlLines(text)[0] || "";
    if (/\.desktop$/i.test(name) || first === "[Desktop Entry]") {
      const entry = desktopEntry(text);
      if (entry && entry.type !== "Link") {
        const shown = entry.type === undefined ? "no Type=" : "Type=" + entry.type.slice(0, 20);
        return { error: "not a link (" + shown + "); only Type=Link entries are added, nothing is run" };
      }
      url = entry ? entry.url : null;
    } else url = linkFileText(text);
  }
  return url && /^[a-z][a-z0-9+.-]*:\/\/[^\s\u0000-\u001f]+$/i.test(url) ? { url } : { error: "no URL found" };
}

function linkFileText(text) {
  const xml = /<key>\s*URL\s*<\/key>\s*<string>([^<]*)<\/string>/i.exec(text) ||
    (/<plist/i.test(text) && /<string>([^<]*)<\/string>/i.exec(text));
  if (xml) {
    const entities = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };
    return xml[1].trim().replace(/&(amp|lt|gt|quot|apos);/g, (_, e) => entities[e]);
  }
  if (/^\s*\[InternetShortcut\]/im.test(text)) {
    const line = /^\s*URL\s*=\s*(\S+)\s*$/im.exec(text);
    return line ? line[1] : null;
  }
  return urlLines(text)[0] || null;
}

// [Desktop Entry]'s Type and URL (a localized URL[xx]= only without a plain one, the
// escapes \s \n \t \r \\ undone); null without that group
function desktopEntry(text) {
  let section = null;
  let keys = null;
  for (const raw of text.split(/\r?\n|\r/)) {
    const line = raw.trim();
    if (!line || line.startsWith("#") || line.startsWith(";")) continue;
    if (line.startsWith("[") && line.endsWith("]")) {
      section = line.slice(1, -1).trim();
      if (section === "Desktop Entry" && !keys) keys = new Map();
    } else if (section === "Desktop Entry" && line.includes("=")) {
      const at = line.indexOf("=");
      const key = line.slice(0, at).trim();
      if (key && !keys.has(key)) keys.set(key, line.slice(at + 1).trim());
    }
  }
  if (!keys) return null;
  let url = keys.get("URL");
  if (url === undefined) {
    const local = Array.from(keys.keys()).filter((k) => k.startsWith("URL[")).sort()[0];
    url = local === undefined ? undefined : keys.get(local);
  }
  const escapes = { s: " ", n: "\n", t: "\t", r: "\r", "\\": "\\" };
  const unescaped = url === undefined ? null
    : url.replace(/\\(.?)/gs, (all, c) => (c in escapes ? escapes[c] : all));
  return { type: keys.get("Type"), url: unescaped && unescaped.trim() ? unescaped : null };
}

function asciiAt(bytes, at, length) {
  if (at + length > bytes.length) return null;
  let out = "";
  for (let i = at; i < at + length; i++) {
    if (bytes[i] > 0x7f) return null;
    out += String.fromCharCode(bytes[i]);
  }
  return out;
}

// The "URL" string of a binary property list whose top object is a dictionary; null for
// anything else, malformed or out of bounds (one level deep: no recursion, no cycles)
function bplistUrl(bytes) {
  const n = bytes.length;
  if (n < 8 + 2 + 32 || n > 65536) return null;
  const uint = (at, size) => {
    if (at < 0 || at + size > n) return NaN;
    let v = 0;
    for (let i = at; i < at + size; i++) v = v * 256 + bytes[i];
    return v;
  };
  const t = n - 32;
  const offSize = bytes[t + 6];
  const refSize = bytes[t + 7];
  const count = uint(t + 8, 8);
  const top = uint(t + 16, 8);
  const table = uint(t + 24, 8);
  const sizes = [1, 2, 4, 8];
  if (!sizes.includes(offSize) || !sizes.includes(refSize)) return null;
  if (!(count >= 1 && top < count && table >= 9 && table + count * offSize <= t)) return null;
  // an object: its type, its length and where its content starts (all inside the objects)
  const object = (ref) => {
    if (!(ref < count)) return null;
    const at = uint(table + ref * offSize, offSize);
    if (!(at >= 8 && at < table)) return null;
    const marker = bytes[at];
    let length = marker & 0x0f;
    let start = at + 1;
    if (length === 0x0f) {
      const int = bytes[at + 1];
      if (at + 1 >= table || (int & 0xf0) !== 0x10 || (int & 0x0f) > 3) return null;
      const size = 1 << (int & 0x0f);
      length = uint(at + 2, size);
      start = at + 2 + size;
    }
    if (!(length <= n && start <= table)) return null;
    return { type: marker >> 4, length, start };
  };
  const string = (ref) => {
    const o = object(ref);
    if (!o) return null;
    if (o.type === 0x5) return o.start + o.length <= table ? asciiAt(bytes, o.start, o.length) : null;
    if (o.type !== 0x6 || o.start + 2 * o.length > table) return null;
    try {
      return new TextDecoder("utf-16be", { fatal: true })
        .decode(bytes.subarray(o.start, o.start + 2 * o.length));
    } catch {
      return null;
    }
  };
  const dict = object(top);
  if (!dict || dict.type !== 0xd || dict.start + 2 * dict.length * refSize > table) return null;
  for (let i = 0; i < dict.length; i++) {
    if (string(uint(dict.start + i * refSize, refSize)) !== "URL") continue;
    const url = string(uint(dict.start + (dict.length + i) * refSize, refSize));
    return url && url.trim() ? url : null;
  }
  return null;
}

async function dropped(event) {
  event.preventDefault();
  $("drop").classList.remove("over");
  const data = event.dataTransfer;
  const urls = [];
  const bad = [];
  for (const file of Array.from(data.files || [])) {
    const got = file.size <= 65536 ? linkFile(file.name, await file.arrayBuffer()) : null;
    if (got && got.url) urls.push(got.url);
    else bad.push(file.name + ": " + (got ? got.error : "no URL found (larger than 64 KiB)"));
  }
  if (!data.files || !data.files.length) {
    urls.push(...urlLines(data.getData("text/uri-list") || data.getData("text/plain") || ""));
  }
  const left = urls.length ? await submit(urls) : [];
  if (left.length) $("urls").value = left.join("\n");
  if (!urls.length && !bad.length) bad.push("Nothing to add in what was dropped.");
  if (!urls.length) $("add-result").replaceChildren();
  for (const line of bad) $("add-result").appendChild(el("li", "bad", line));
}

// -- start ---------------------------------------------------------------------------------

function start() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("forget").hidden = !state.token;
  setLive(false, "connecting…");
  load().then((ok) => { if (ok) startStream(); else if (!$("app").hidden) startPolling(); });
  if (!state.started) {
    state.started = true;
    setInterval(() => { if (!$("app").hidden) load(); }, REFRESH_MS);
  }
}

function wire() {
  $("login").addEventListener("submit", signIn);
  $("forget").addEventListener("click", forgetToken);
  $("add").addEventListener("submit", addFromForm);
  $("filter").addEventListener("change", () => {
    state.filter = $("filter").value;
    state.offset = 0;
    load();
  });
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); load(); });
  $("next").addEventListener("click", () => { state.offset += PAGE; load(); });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", dropped);
  start();
}

document.addEventListener("DOMContentLoaded", wire);
