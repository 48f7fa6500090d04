// The live recoveries page's script, served by the remediator as its own file (GET /recoveries.js)
// so the page's Content-Security-Policy can forbid inline script (script-src 'self').
// The token comes from the URL fragment (#token=...), which browsers never send to the server. It is
// remembered in this browser so that story links (#execution=<id>, from announcements and Grafana)
// open without it.
const TOKEN_KEY = "exec-watchdog-token";
const fragment = () => new URLSearchParams(location.hash.slice(1));
const token = fragment().get("token") || localStorage.getItem(TOKEN_KEY) || "";
const rows = document.getElementById("rows");
const statusLine = document.getElementById("status");
const shown = new Set();
const ACTIONS = {orphan_recovered: "fail_orphan", auto_terminated: "terminate_overdue"};  // event -> audit
// The event is sent just before its audit row is written, so the row may need asking for again.
const RETRY_MS = [0, 250, 500, 1000, 2000, 4000, 8000];

class Unauthorized extends Error {}

function say(text, cls) {
  statusLine.textContent = text;
  statusLine.className = cls || "";
}

function cell(field, text, cls) {
  const td = document.createElement("td");
  td.dataset.field = field;
  td.textContent = text == null ? "" : text;
  if (cls) td.className = cls;
  return td;
}

function ttr(d) {
  if (!d.recovered_at || !d.alert_started_at) return "";
  const s = (Date.parse(d.recovered_at) - Date.parse(d.alert_started_at)) / 1000;
  // Counted from the alert's firing (its startsAt), so it can be well under a second.
  return Number.isFinite(s) ? s.toFixed(2) + " s" : "";
}

// Rows stay newest first by audit id whatever order they arrive in; rows built from an event alone
// (no audit id) go on top.
function addRow(key, d, fresh) {
  if (shown.has(key)) return;
  shown.add(key);
  const tr = document.createElement("tr");
  tr.dataset.executionId = d.execution_id;
  tr.dataset.id = d.id == null ? "" : String(d.id);
  tr.className = (fresh ? "fresh " : "") + "recovery";
  tr.append(cell("time", d.decided_at), cell("agent", d.agent_name), cell("execution", d.execution_id),
            cell("action", d.remediation, "action-" + d.remediation), cell("outcome", d.outcome),
            cell("ttr", ttr(d)), cell("reason", d.reason), cell("evidence", "▸ show", "toggle"));
  tr.addEventListener("click", () => toggleStory(tr, d));
  const older = d.id == null ? rows.firstElementChild
    : [...rows.children].find(r => r.dataset.id !== "" && Number(r.dataset.id) < d.id);
  rows.insertBefore(tr, older || null);
}

async function audit(query) {
  const res = await fetch("/api/v1/audit?" + query, {headers: {Authorization: "Bearer " + token}});
  if (res.status === 401) throw new Unauthorized("audit API answered 401: check the token after #token= in the URL");
  if (!res.ok) throw new Error("audit API answered " + res.status);
  return (await res.json()).decisions.filter(d => d.outcome !== "ignored");
}

async function fetchStory(executionId) {
  const res = await fetch("/api/v1/executions/" + encodeURIComponent(executionId),
                          {headers: {Authorization: "Bearer " + token}});
  if (res.status === 401) throw new Unauthorized("story API answered 401: check the token");
  if (!res.ok) throw new Error("story API answered " + res.status);
  return res.json();
}

function element(tag, text, cls) {
  const el = document.createElement(tag);
  if (text != null) el.textContent = text;
  if (cls) el.className = cls;
  return el;
}

// The story in time order; the decision this row stands for (if any) is marked. Text only: every
// value came from alerts and agents, so none of it is ever treated as HTML.
function renderStory(story, decisionId) {
  const box = element("div", null, "story");
  const ex = story.execution;
  box.append(element("div", ex ? `now ${ex.status} on agent ${ex.agent}, started ${ex.started_at}`
    + (ex.error ? ` — ${ex.error}` : "") : "not in the platform's database", "story-head"));
  if (story.story_url) {
    const link = element("a", "link to this story", "story-link");
    link.href = story.story_url;
    box.append(link);
  }
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
      ev.facts.forEach(f => facts.append(element("li", f, "fact")));
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
  return box;
}

async function toggleStory(tr, d) {
  const next = tr.nextElementSibling;
  const toggle = tr.querySelector("td.toggle");
  if (next && next.classList.contains("story-row")) {
    next.remove();
    toggle.textContent = "▸ show";
    return;
  }
  const detail = element("tr", null, "story-row");
  detail.dataset.storyFor = d.execution_id;
  const td = element("td", "loading the story…");
  td.colSpan = tr.cells.length;
  detail.append(td);
  tr.after(detail);
  toggle.textContent = "▾ hide";
  try {
    td.replaceChildren(renderStory(await fetchStory(d.execution_id), d.id));
  } catch (err) {
    td.textContent = "could not load the story: " + err.message;
  }
}

// #execution=<id>: open that execution's story above the table (the link announcements carry).
async function showFocused() {
  const id = fragment().get("execution");
  const section = document.getElementById("story");
  if (!id) {
    section.hidden = true;
    return;
  }
  section.hidden = false;
  section.dataset.executionId = id;
  document.getElementById("story-title").textContent = "Story of execution " + id;
  const body = document.getElementById("story-body");
  body.textContent = "loading…";
  try {
    body.replaceChildren(renderStory(await fetchStory(id), null));
  } catch (err) {
    body.textContent = "could not load the story: " + err.message;
  }
}

async function loadRecent(fresh) {
  (await audit("limit=200")).forEach(d => addRow(d.id, d, fresh));
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

async function showRecovery(event) {
  for (const wait of RETRY_MS) {
    await sleep(wait);
    try {
      const found = (await audit("execution_id=" + encodeURIComponent(event.execution_id) + "&limit=20"))
        .filter(d => d.outcome === "recovered");
      if (found.length) {
        found.forEach(d => addRow(d.id, d, true));
        return;
      }
    } catch (err) {
      console.warn("audit lookup failed", err);
    }
  }
  // No audit row after all: still show what the event itself says.
  addRow("event:" + event.execution_id, {decided_at: event.timestamp, agent_name: event.agent_name,
    execution_id: event.execution_id, remediation: ACTIONS[event.action] || event.action, outcome: "recovered",
    reason: event.reason}, true);
}

function connect(reconnecting) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/api/v1/events?access_token=${encodeURIComponent(token)}`);
  ws.onopen = () => {
    say("live", "live");
    // Recoveries announced while we were away never reach us as events: fetch them.
    if (reconnecting) loadRecent(true).catch(err => console.warn("catch-up failed", err));
  };
  ws.onclose = () => { say("disconnected; retrying…"); setTimeout(() => connect(true), 2000); };
  ws.onmessage = (msg) => {
    const event = JSON.parse(msg.data);
    if (event.type === "watchdog_recovery") showRecovery(event);
  };
}

async function start() {
  if (!token) {
    say("no token: open this page as /#token=<bearer token>", "error");
    return;
  }
  try {
    await loadRecent(false);
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
  showFocused();
  connect(false);
}

window.addEventListener("hashchange", showFocused);
start();
