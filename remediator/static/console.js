// The on-call console: what is happening now, what was done and why, and a pause button.
//
// The token comes from the URL fragment (#token=...), which browsers never send to the server. It is
// remembered in this browser so that story links (#execution=<id>, from announcements and Grafana)
// open without it. Every value shown came from alerts, agents or the database: it is only ever set
// as text (never as HTML), and only http(s) URLs become links.
"use strict";

const TOKEN_KEY = "exec-watchdog-token";
const fragment = () => new URLSearchParams(location.hash.slice(1));
const token = fragment().get("token") || localStorage.getItem(TOKEN_KEY) || "";
const $ = (id) => document.getElementById(id);
// What the list shows by default: something was done or tried. Waits, skips, silenced and ignored
// alerts sit behind the toggle (and always in the story).
const ACTION_OUTCOMES = ["recovered", "would_recover", "lost_race", "retry", "breaker_open"];
const ACTION_WORDS = {fail_orphan: "orphan failed", terminate_overdue: "terminated", claim_result: "claimed"};
const TRIED_WORDS = {fail_orphan: "fail orphan", terminate_overdue: "terminate overdue", claim_result: "claim result"};
const NOW_EVERY_MS = 3000, LIST_EVERY_MS = 5000;

class Unauthorized extends Error {}

function say(text, cls) {
  const line = $("status");
  line.textContent = text;
  line.className = cls || "";
}

function element(tag, text, cls) {
  const el = document.createElement(tag);
  if (text != null) el.textContent = text;
  if (cls) el.className = cls;
  return el;
}

function safeUrl(url) {
  return typeof url === "string" && /^https?:\/\//i.test(url) ? url : null;
}

function link(text, url) {
  const a = element("a", text);
  a.href = url;
  a.rel = "noreferrer";
  return a;
}

async function api(path, options) {
  const init = Object.assign({headers: {}}, options || {});
  init.headers.Authorization = "Bearer " + token;
  if (init.body !== undefined) init.headers["Content-Type"] = "application/json";
  const res = await fetch(path, init);
  if (res.status === 401) throw new Unauthorized(path.split("?")[0] + " answered 401: check the token after #token= in the URL");
  let body = null;
  try { body = await res.json(); } catch (err) { body = null; }
  if (!res.ok) throw new Error((body && body.error) || (path.split("?")[0] + " answered " + res.status));
  return body;
}

// -- times --------------------------------------------------------------------------------------

function relative(iso) {
  const ms = Date.parse(iso);
  if (!Number.isFinite(ms)) return iso || "";
  const s = Math.round((Date.now() - ms) / 1000);
  const future = s < 0, a = Math.abs(s);
  const text = a < 5 ? "just now" : a < 60 ? a + " s" : a < 3600 ? Math.floor(a / 60) + " min"
    : a < 86400 ? Math.floor(a / 3600) + " h " + Math.floor((a % 3600) / 60) + " min" : Math.floor(a / 86400) + " d";
  return a < 5 ? text : future ? "in " + text : text + " ago";
}

function absolute(iso) {
  const ms = Date.parse(iso);
  return Number.isFinite(ms) ? new Date(ms).toLocaleString() + " (" + iso + ")" : String(iso);
}

function timeElement(iso) {
  const t = element("time", relative(iso));
  t.dateTime = iso || "";
  t.title = absolute(iso);
  return t;
}

function refreshTimes() {
  document.querySelectorAll("time[datetime]").forEach((t) => { t.textContent = relative(t.dateTime); });
}

function duration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return "";
  if (seconds < 60) return seconds.toFixed(1) + " s";
  const m = Math.floor(seconds / 60), s = Math.round(seconds % 60);
  return m < 60 ? `${m} min ${s} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

function detectedAfter(d) {
  if (!d.detected_at || !d.recovered_at) return null;
  const s = (Date.parse(d.recovered_at) - Date.parse(d.detected_at)) / 1000;
  return Number.isFinite(s) ? Math.max(0, s) : null;
}

// -- Now ----------------------------------------------------------------------------------------

function renderState(now) {
  const r = now.remediation;
  const state = $("state");
  state.dataset.state = r.state;
  const paused = r.paused_by.length > 0;
  document.body.classList.toggle("paused", paused);
  document.title = (paused ? "PAUSED · " : "") + "exec-watchdog — on call";
  const words = {active: "Remediation is active", paused: "Remediation is PAUSED",
    breaker_open: "The breaker is OPEN: remediation stopped", dry_run: "Dry run: verifying, changing nothing",
    shadow: "Shadow: beside the platform's own cleanup, deciding and comparing, changing nothing",
    unknown: "Cannot tell whether remediation is paused (Alertmanager did not answer)"};
  state.textContent = words[r.state] || r.state;
  if (r.dry_run && r.state !== "dry_run") state.textContent += " · dry run";
  if (r.shadow && r.state !== "shadow") state.textContent += " · shadow";
  const list = $("paused-by");
  list.replaceChildren(...r.paused_by.map((p) => {
    const li = element("li", null, "pause");
    li.dataset.silenceId = p.silence_id;
    li.append(`by silence ${p.silence_id}, ${p.created_by}: “${p.comment}”, until `, timeElement(p.ends_at));
    return li;
  }));
  const banner = $("paused-banner");
  banner.hidden = !paused;
  if (paused) {
    const p = r.paused_by[0];
    banner.textContent = `Remediation is paused by ${p.created_by} (“${p.comment}”) until ${absolute(p.ends_at)}`
      + (r.paused_by.length > 1 ? ` and ${r.paused_by.length - 1} more silence(s)` : "")
      + ". Alerts keep firing; nothing is recovered until it is resumed.";
  }
  $("resume").hidden = !paused;
  $("breaker").hidden = !r.breaker.open;
  $("breaker-text").textContent = `more than ${r.breaker.max_actions} remediations in ${r.breaker.window_seconds} s`;
}

function alertmanagerLink(base, alert) {
  const filter = `{execution_id="${alert.execution_id}"}`;
  return safeUrl(base) ? `${base.replace(/\/$/, "")}/#/alerts?silenced=true&inhibited=true&filter=${encodeURIComponent(filter)}` : null;
}

function renderFiring(now) {
  $("firing-count").textContent = `(${now.firing_not_acted_on_count} of ${now.firing_count} firing)`;
  const items = now.firing_not_acted_on.map((a) => {
    const li = element("li", null, "firing");
    li.dataset.executionId = a.execution_id;
    const story = link(a.execution_id, "#execution=" + encodeURIComponent(a.execution_id));
    li.append(element("strong", a.alertname), ` · ${a.agent} · `, story, " · since ", timeElement(a.starts_at));
    if (a.state === "suppressed") li.append(" · suppressed" + (a.silenced_by.length ? " (silenced)" : " (inhibited)"));
    const last = a.last_decision;
    li.append(element("div", last ? `last decision: ${last.outcome} — ${last.reason}` : "no decision yet", "hint"));
    const links = element("div", null, "links");
    if (safeUrl(a.generator_url)) links.append(link("Prometheus", a.generator_url));
    const am = alertmanagerLink(a.alertmanager_url, a);
    if (am) links.append(link("Alertmanager", am));
    if (links.childElementCount) li.append(links);
    return li;
  });
  if (!items.length) items.push(element("li", "nothing waiting", "hint"));
  $("firing").replaceChildren(...items);
}

function renderCounts(now) {
  const pairs = new Set();
  for (const w of ["hour", "day"]) {
    for (const [action, outcomes] of Object.entries(now.counts[w] || {})) {
      for (const outcome of Object.keys(outcomes)) pairs.add(action + "\u0000" + outcome);
    }
  }
  const box = $("counts");
  if (!pairs.size) {
    box.replaceChildren(element("p", "no decisions in the last day", "hint"));
    return;
  }
  const table = element("table", null, "counts");
  table.append(element("caption", "Decisions by action and outcome", "visually-hidden"));
  const head = element("tr");
  for (const h of ["action", "outcome", "last hour", "last day"]) {
    const th = element("th", h);
    th.scope = "col";
    head.append(th);
  }
  table.append(head);
  for (const pair of [...pairs].sort()) {
    const [action, outcome] = pair.split("\u0000");
    const tr = element("tr");
    tr.dataset.action = action;
    tr.dataset.outcome = outcome;
    const n = (w) => ((now.counts[w] || {})[action] || {})[outcome] || 0;
    tr.append(element("td", action), element("td", outcome), element("td", String(n("hour")), "n"),
              element("td", String(n("day")), "n"));
    table.append(tr);
  }
  box.replaceChildren(table);
}

function renderNow(now) {
  renderState(now);
  renderFiring(now);
  renderCounts(now);
  const last = $("last-notification");
  if (now.last_notification_at) last.replaceChildren(timeElement(now.last_notification_at));
  else last.textContent = "none since this replica started" + (now.last_decision_at ? "; last decision " : "");
  if (!now.last_notification_at && now.last_decision_at) last.append(timeElement(now.last_decision_at));
  const links = $("links");
  links.replaceChildren();
  if (safeUrl(now.links.alertmanager)) links.append(link("Alertmanager", now.links.alertmanager));
  if (safeUrl(now.links.grafana)) links.append(link("Grafana dashboard", now.links.grafana));
  $("problems").textContent = now.problems.join("; ");
}

async function refreshNow() {
  renderNow(await api("/api/v1/now"));
}

// -- the list -----------------------------------------------------------------------------------

const rows = () => $("rows");
const seenAgents = new Set();
let listGeneration = 0;

function listQuery() {
  const q = new URLSearchParams({limit: "300"});
  const agent = $("f-agent").value.trim(), action = $("f-action").value, outcome = $("f-outcome").value;
  const search = $("f-search").value.trim();
  if (agent) q.set("agent", agent);
  if (action) q.set("action", action);
  if (outcome) q.set("outcome", outcome);
  else if (!$("f-quiet").checked) q.set("outcome", ACTION_OUTCOMES.join(","));
  if (search) q.set("search", search);
  return q.toString();
}

function cell(field, label, content, cls) {
  const td = document.createElement("td");
  td.dataset.field = field;
  td.dataset.label = label;
  if (content instanceof Node) td.append(content);
  else td.textContent = content == null ? "" : content;
  if (cls) td.className = cls;
  return td;
}

function buildRow(d, fresh) {
  const tr = document.createElement("tr");
  tr.dataset.executionId = d.execution_id;
  tr.dataset.id = String(d.id);
  tr.dataset.action = d.action || d.remediation;
  tr.className = (fresh ? "fresh " : "") + "recovery";
  const after = detectedAfter(d);
  const action = d.outcome === "recovered" ? (ACTION_WORDS[d.action] || d.action || d.remediation)
    : (TRIED_WORDS[d.remediation] || d.remediation);
  const button = element("button", null, "toggle");
  button.type = "button";
  setToggle(button, false, d.execution_id);
  button.addEventListener("click", (ev) => { ev.stopPropagation(); toggleStory(tr, d); });
  const detected = cell("detected", "detected after", after == null ? "" : duration(after));
  if (after != null) detected.title = "lost at " + absolute(d.detected_at) + ", recovered at " + absolute(d.recovered_at);
  tr.append(cell("time", "when", timeElement(d.decided_at)), cell("agent", "agent", d.agent_name),
            cell("execution", "execution", element("code", d.execution_id)),
            cell("action", "action", action), cell("outcome", "outcome", d.outcome, "o-" + d.outcome),
            detected, cell("reason", "reason", d.reason), cell("story", "story", button));
  tr.addEventListener("click", (ev) => {
    if (ev.target.closest("a, button") || (window.getSelection() || "").toString()) return;
    toggleStory(tr, d);
  });
  return tr;
}

// The visible word, and for screen readers whose story it is (a label that keeps the visible word).
function setToggle(button, open, executionId) {
  button.replaceChildren(open ? "hide" : "show", element("span", " the story of " + executionId, "visually-hidden"));
  button.setAttribute("aria-expanded", String(open));
}

async function refreshList(fresh) {
  const generation = ++listGeneration;
  const decisions = (await api("/api/v1/audit?" + listQuery())).decisions;
  if (generation !== listGeneration) return;  // a newer query (a filter changed) won
  const body = rows();
  const existing = new Map([...body.querySelectorAll("tr.recovery")].map((tr) => [tr.dataset.id, tr]));
  const ordered = [];
  for (const d of decisions) {
    seenAgents.add(d.agent_name);
    const old = existing.get(String(d.id));
    const tr = old || buildRow(d, fresh);
    existing.delete(String(d.id));
    ordered.push(tr);
    const story = old && old.nextElementSibling && old.nextElementSibling.classList.contains("story-row")
      ? old.nextElementSibling : null;
    if (story) ordered.push(story);
  }
  for (const [, tr] of existing) {
    const next = tr.nextElementSibling;
    if (next && next.classList.contains("story-row")) next.remove();
    tr.remove();
  }
  ordered.forEach((tr) => body.append(tr));  // append moves: the order is the list's
  $("list-summary").textContent = `${decisions.length} decision(s)` + (decisions.length >= 300 ? " (the newest 300)" : "")
    + ($("f-quiet").checked || $("f-outcome").value ? "" : " — waits, skips and ignores hidden");
  const options = $("agents");
  if (options.childElementCount !== seenAgents.size) {
    options.replaceChildren(...[...seenAgents].sort().map((a) => { const o = element("option"); o.value = a; return o; }));
  }
}

// -- the story ----------------------------------------------------------------------------------

async function fetchStory(executionId) {
  return api("/api/v1/executions/" + encodeURIComponent(executionId));
}

// The story in time order; the decision this row stands for (if any) is marked.
function renderStory(story, decisionId) {
  const box = element("div", null, "story");
  const ex = story.execution;
  box.append(element("div", ex ? `now ${ex.status} on agent ${ex.agent}, started ${ex.started_at}`
    + (ex.error ? ` — ${ex.error}` : "") : "not in the platform's database", "story-head"));
  const r = story.recovery;
  if (r) {
    const after = r.detected_after_seconds;
    box.append(element("div", `${ACTION_WORDS[r.action] || r.action} at ${r.recovered_at}`
      + (after != null ? `, detected after ${duration(after)} (lost at ${r.detected_at})` : ", when it was lost is unknown"),
      "story-detected"));
  }
  const links = element("div", null, "story-links");
  const l = story.links || {};
  if (safeUrl(l.prometheus)) links.append(link("the alert in Prometheus", l.prometheus));
  if (safeUrl(l.alertmanager)) {
    links.append(link("Alertmanager", alertmanagerLink(l.alertmanager, {execution_id: story.execution_id})));
  }
  if (safeUrl(l.grafana)) links.append(link("Grafana dashboard", l.grafana));
  if (safeUrl(story.story_url)) links.append(link("link to this story", story.story_url));
  if (links.childElementCount) box.append(links);
  const list = element("ol");
  for (const ev of story.timeline) {
    const item = element("li", null, "event");
    item.dataset.kind = ev.kind;
    const line = element("div");
    line.append(element("span", ev.at, "at"), element("span", ev.kind, "kind"), element("span", ev.summary, "summary"));
    item.append(line);
    if (ev.decision) {
      item.dataset.decisionId = String(ev.decision.id);
      if (ev.decision.id === decisionId) item.classList.add("this");
    }
    if (ev.facts && ev.facts.length) {
      const facts = element("ul");
      ev.facts.forEach((f) => facts.append(element("li", f, "fact")));
      item.append(facts);
    }
    if (ev.decision && ev.decision.evidence) {
      const raw = element("details");
      raw.append(element("summary", "evidence as recorded (JSON)"), element("pre", JSON.stringify(ev.decision.evidence, null, 2)));
      item.append(raw);
    }
    list.append(item);
  }
  box.append(list);
  if (story.decisions_left_out) box.append(element("p", `${story.decisions_left_out} older decision(s) left out`, "hint"));
  return box;
}

async function toggleStory(tr, d) {
  const next = tr.nextElementSibling;
  const button = tr.querySelector("button.toggle");
  if (next && next.classList.contains("story-row")) {
    next.remove();
    setToggle(button, false, d.execution_id);
    return;
  }
  const detail = element("tr", null, "story-row");
  detail.dataset.storyFor = d.execution_id;
  const td = element("td", "loading the story…");
  td.colSpan = tr.cells.length;
  detail.append(td);
  tr.after(detail);
  setToggle(button, true, d.execution_id);
  try {
    td.replaceChildren(renderStory(await fetchStory(d.execution_id), d.id));
  } catch (err) {
    td.textContent = "could not load the story: " + err.message;
  }
}

// #execution=<id>: open that execution's story above the list (the link announcements carry).
async function showFocused() {
  const id = fragment().get("execution");
  const section = $("story");
  if (!id) {
    section.hidden = true;
    return;
  }
  section.hidden = false;
  section.dataset.executionId = id;
  $("story-title").textContent = "Story of execution " + id;
  const body = $("story-body");
  body.textContent = "loading…";
  try {
    body.replaceChildren(renderStory(await fetchStory(id), null));
  } catch (err) {
    body.textContent = "could not load the story: " + err.message;
  }
}

// -- actions ------------------------------------------------------------------------------------

async function act(path, body, errorBox) {
  errorBox.textContent = "";
  try {
    await api(path, {method: "POST", body: JSON.stringify(body)});
  } catch (err) {
    errorBox.textContent = err.message;
    return false;
  }
  await refreshNow().catch(() => {});
  return true;
}

function pauseInput() {
  const author = $("pause-author").value.trim(), comment = $("pause-comment").value.trim();
  const minutes = Number($("pause-minutes").value);
  if (!author) return "Say who you are: the next engineer will want to ask you.";
  if (!comment) return "Say why: a pause without a reason is hard to end safely.";
  if (!Number.isInteger(minutes) || minutes < 1 || minutes > 10080) return "The duration is a whole number of minutes from 1 to 10080 (7 days).";
  return {author, comment, duration_minutes: minutes};
}

function wireActions() {
  $("pause-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = pauseInput();
    if (typeof body === "string") {
      $("pause-error").textContent = body;
      return;
    }
    if (await act("/api/v1/pause", body, $("pause-error"))) {
      $("pause-comment").value = "";
      $("pause-box").open = false;
      $("resume").focus();
    }
  });
  $("resume").addEventListener("click", () => act("/api/v1/resume", {}, $("action-error")));
  $("breaker-reset").addEventListener("click", () => act("/api/v1/breaker/reset", {}, $("action-error")));
  let timer = null;
  const changed = () => {
    clearTimeout(timer);
    timer = setTimeout(() => refreshList(false).catch(showError), 250);
  };
  for (const id of ["f-agent", "f-search"]) $(id).addEventListener("input", changed);
  for (const id of ["f-action", "f-outcome", "f-quiet"]) $(id).addEventListener("change", changed);
  $("filters").addEventListener("submit", (ev) => { ev.preventDefault(); changed(); });
}

function showError(err) {
  if (err instanceof Unauthorized) say(err.message, "error");
  else console.warn(err);
}

// -- live ---------------------------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function onRecovery(event) {
  // The event is sent just before its audit row is complete: ask again a few times.
  for (const wait of [0, 300, 1000, 2500, 5000]) {
    await sleep(wait);
    try {
      await refreshList(true);
      const tr = rows().querySelector(`tr.recovery[data-execution-id="${CSS.escape(event.execution_id)}"]`);
      if (tr) break;
    } catch (err) {
      showError(err);
    }
  }
  refreshNow().catch(showError);
}

function connect(reconnecting) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/api/v1/events?access_token=${encodeURIComponent(token)}`);
  ws.onopen = () => {
    say("live", "live");
    if (reconnecting) refreshList(true).catch(showError);  // what was announced while we were away
  };
  ws.onclose = () => { say("disconnected; retrying…"); setTimeout(() => connect(true), 2000); };
  ws.onmessage = (msg) => {
    let event = null;
    try { event = JSON.parse(msg.data); } catch (err) { return; }
    if (event && event.type === "watchdog_recovery") onRecovery(event);
  };
}

async function start() {
  if (!token) {
    say("no token: open this page as /#token=<bearer token>", "error");
    return;
  }
  try {
    await refreshList(false);
    if (fragment().get("token")) localStorage.setItem(TOKEN_KEY, token);
  } catch (err) {
    if (err instanceof Unauthorized) {
      if (localStorage.getItem(TOKEN_KEY) === token) localStorage.removeItem(TOKEN_KEY);
      say(err.message, "error");  // a wrong token stays wrong: do not retry
    } else {
      say(err.message + "; retrying…", "error");
      setTimeout(start, 5000);
    }
    return;
  }
  wireActions();
  refreshNow().catch(showError);
  setInterval(() => refreshNow().catch(showError), NOW_EVERY_MS);
  setInterval(() => refreshList(false).catch(showError), LIST_EVERY_MS);
  setInterval(refreshTimes, 10000);
  showFocused();
  connect(false);
}

window.addEventListener("hashchange", showFocused);
document.addEventListener("DOMContentLoaded", start);
