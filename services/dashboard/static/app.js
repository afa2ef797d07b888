// The Collect Tasks dashboard: plain JavaScript over the public API, with the API key kept in
// sessionStorage (never a cookie or a URL). Live updates poll about once a second with conditional
// requests (If-None-Match): an unchanged page answers 304 with no body and nothing is redrawn.

const KEY_STORAGE = "collect.apiKey";
// Polls start 0.9 s apart, so that a change is on screen within a second of happening.
const POLL_MS = 900;
const PAGE_SIZE = 20;
const TERMINAL = new Set(["completed", "failed", "revoked"]);

// Which actions each state allows (the API's state machine). Change it here, in one place.
const ALLOWED = {
  pause: ["queued", "running"],
  resume: ["paused", "pausing", "failed"],
  revoke: ["queued", "running", "pausing", "paused", "failed"],
};
const ACTION_LABELS = { pause: "Pause", resume: "Resume", revoke: "Revoke" };
const STATE_HELP = {
  queued: "waiting for a worker",
  running: "a worker is processing it",
  pausing: "pause requested; the worker stops at its next checkpoint",
  paused: "stopped at a checkpoint; resume continues from there",
  revoking: "revoke requested; the worker is rolling back",
  revoked: "stopped and rolled back",
  completed: "finished",
  failed: "stopped by an error; its work is kept: resume retries from the checkpoint, revoke rolls it back",
};

const $ = (id) => document.getElementById(id);
const ui = {
  signInView: $("sign-in-view"), appView: $("app-view"), signInForm: $("sign-in-form"), keyInput: $("api-key"),
  signInError: $("sign-in-error"), signOut: $("sign-out"), notice: $("notice"),
  rows: $("task-rows"), empty: $("empty"), listError: $("list-error"), pageInfo: $("page-info"),
  prev: $("prev-page"), next: $("next-page"), filterState: $("filter-state"), filterKind: $("filter-kind"),
  uploadForm: $("upload-form"), uploadFile: $("upload-file"), uploadFileName: $("upload-file-name"),
  dropzone: $("dropzone"), uploadStatus: $("upload-status"), uploadSubmit: $("upload-submit"),
  exportForm: $("export-form"), exportStatus: $("export-status"), exportSubmit: $("export-submit"),
  detail: $("detail-dialog"), detailTitle: $("detail-title"), detailState: $("detail-state"),
  detailCountdown: $("detail-countdown"), detailProgress: $("detail-progress"), detailActions: $("detail-actions"),
  detailBody: $("detail-body"), confirm: $("confirm-dialog"), confirmText: $("confirm-text"),
};

const session = {
  key: null, offset: 0, listEtag: null, listTimer: null, rows: new Map(), generation: 0,
  detailId: null, detailEtag: null, detailTask: null, detailTimer: null,
  tracked: { upload: null, export: null },
};

// ---------- API ----------

class ApiError extends Error {
  constructor(status, problem) {
    super(plainProblem(status, problem));
    this.status = status;
    this.problem = problem;
  }
}

function plainProblem(status, problem) {
  if (problem && (problem.title || problem.detail)) {
    const detail = problem.detail && problem.detail !== problem.title ? `: ${problem.detail}` : "";
    return `${problem.title || `Error ${status}`}${detail}`;
  }
  return status ? `The server answered ${status}.` : "The server could not be reached.";
}

async function api(path, { method = "GET", etag = null } = {}) {
  const headers = { Authorization: `Bearer ${session.key}`, Accept: "application/json" };
  if (etag) headers["If-None-Match"] = etag;
  let response;
  try {
    // no-store: the 304 must reach this code (the browser's cache would turn it into a 200).
    response = await fetch(path, { method, headers, cache: "no-store" });
  } catch {
    throw new ApiError(0, null);
  }
  if (response.status === 304) return { status: 304, etag, body: null, response };
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401 && session.key) signOut("Your API key is no longer accepted. Sign in again.");
    throw new ApiError(response.status, body);
  }
  return { status: response.status, etag: response.headers.get("ETag"), body, response };
}

// ---------- formatting ----------

const numberFormat = new Intl.NumberFormat();
function formatBytes(n) {
  if (n == null) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = n, unit = 0;
  while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit += 1; }
  return `${unit ? value.toFixed(value < 10 ? 1 : 0) : value} ${units[unit]}`;
}
function formatAmount(n, unit) {
  if (n == null) return "—";
  return unit === "bytes" ? formatBytes(n) : `${numberFormat.format(n)} ${unit}`;
}
function formatDuration(seconds) {
  if (seconds == null) return "—";
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${r}` : `${m}:${r}`;
}
function formatRate(task) {
  if (task.rate_per_second == null) return "—";
  const unit = task.progress.unit;
  return unit === "bytes" ? `${formatBytes(task.rate_per_second)}/s` : `${numberFormat.format(Math.round(task.rate_per_second))} ${unit}/s`;
}
const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
function formatCreated(iso) {
  const at = new Date(iso);
  const today = new Date().toDateString() === at.toDateString();
  return today ? timeFormat.format(at) : dateTimeFormat.format(at);
}
function describeTarget(task) {
  const p = task.params || {};
  if (task.kind === "upload") return p.filename || "(unnamed file)";
  if (task.kind === "export") {
    const range = `${p.from_date ?? "?"} → ${p.to_date ?? "?"}`;
    return p.form_id ? `${range} · form ${p.form_id}` : range;
  }
  return "";
}
function percentOf(task) {
  if (task.state === "completed") return 100;
  return task.progress.percent == null ? 0 : task.progress.percent;
}
function countdownText(deadline) {
  const left = (new Date(deadline).getTime() - Date.now()) / 1000;
  return left > 0 ? `auto-revoked in ${formatDuration(left)}` : "auto-revoke due";
}

// ---------- small DOM builders ----------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("data-") || name.startsWith("aria-") || name === "role") node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function badge(state) {
  return el("span", { class: `badge badge-${state}`, text: state, title: STATE_HELP[state] || state });
}

function progressBar() {
  const fill = el("span", { class: "bar-fill" });
  const bar = el("span", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" }, fill);
  const label = el("span", { class: "bar-label" });
  return { node: el("span", { class: "progress" }, bar, label), bar, fill, label };
}

function setProgress(parts, percent, state, ariaLabel) {
  const value = Math.max(0, Math.min(100, percent));
  parts.bar.setAttribute("aria-valuenow", String(value));
  parts.bar.setAttribute("aria-label", ariaLabel);
  parts.bar.dataset.state = state;
  parts.fill.style.width = `${value}%`;
  parts.label.textContent = `${value.toFixed(value >= 10 || value === 0 ? 0 : 1)}%`;
}

// ---------- actions ----------

function allowed(action, state) {
  return ALLOWED[action].includes(state);
}

function actionButtons(taskId, where) {
  const buttons = {};
  const group = el("span", { class: "actions" });
  for (const action of Object.keys(ALLOWED)) {
    const button = el("button", { type: "button", class: action === "revoke" ? "small danger-outline" : "small",
      text: ACTION_LABELS[action], "data-action": action });
    button.addEventListener("click", () => runAction(action, taskId, where));
    buttons[action] = button;
    group.append(button);
  }
  return { group, buttons };
}

function updateButtons(buttons, task, label) {
  for (const [action, button] of Object.entries(buttons)) {
    button.disabled = !allowed(action, task.state);
    button.setAttribute("aria-label", `${ACTION_LABELS[action]} ${label}`);
  }
}

async function revokeConsequence(taskId) {
  const { body: task } = await api(`/api/tasks/${taskId}/`);
  if (task.kind === "upload") {
    const rows = (task.checkpoint && task.checkpoint.rows_inserted) || (task.result && task.result.rows_inserted) || 0;
    return `The upload stops. ${numberFormat.format(rows)} ${rows === 1 ? "row" : "rows"} will be deleted, and so will the uploaded file.`;
  }
  if (task.kind === "export") return "The export stops and the partial file will be deleted.";
  return "The task stops and its effects are rolled back.";
}

function confirmRevoke(text) {
  ui.confirmText.textContent = text;
  ui.confirm.returnValue = "";
  ui.confirm.showModal();
  return new Promise((resolve) => {
    ui.confirm.addEventListener("close", () => resolve(ui.confirm.returnValue === "confirm"), { once: true });
  });
}

async function runAction(action, taskId, where) {
  hideNotice();
  try {
    if (action === "revoke") {
      const text = await revokeConsequence(taskId);
      if (!(await confirmRevoke(text))) return;
    }
    const { body } = await api(`/api/${action}/${taskId}/`, { method: "POST" });
    applyTaskUpdate(body);
  } catch (error) {
    showNotice(`Could not ${action} the task. ${error.message}`);
    // The row was out of date (another user or the pause timeout acted first): show the task as it is.
    api(`/api/tasks/${taskId}/`).then(({ body }) => applyTaskUpdate(body)).catch(() => {});
  }
  if (where === "detail") refreshDetail(true);
}

function applyTaskUpdate(task) {
  // Show the answer of an action at once; the next poll brings the rest.
  const row = session.rows.get(task.task_id);
  if (row) updateRow(row, task);
  if (session.detailId === task.task_id) renderDetailHead(task);
  session.listEtag = null;
}

function showNotice(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = false;
}
function hideNotice() {
  ui.notice.hidden = true;
  ui.notice.textContent = "";
}

// ---------- the task table ----------

function makeRow(task) {
  const label = `${task.kind} ${describeTarget(task)}`;
  const cells = {
    kind: el("td", { "data-label": "Kind", class: "kind" }),
    state: el("td", { "data-label": "State" }),
    progress: el("td", { "data-label": "Progress", class: "progress-cell" }),
    done: el("td", { "data-label": "Done of total", class: "num" }),
    rate: el("td", { "data-label": "Rate", class: "num" }),
    eta: el("td", { "data-label": "ETA", class: "num" }),
    created: el("td", { "data-label": "Created", class: "created" }),
    target: el("td", { "data-label": "File or date range", class: "target" }),
    actions: el("td", { class: "row-actions" }),
  };
  const details = el("button", { type: "button", class: "link", text: task.kind, "aria-label": `Details of ${label}` });
  details.addEventListener("click", () => openDetail(task.task_id));
  cells.kind.append(details);
  const bar = progressBar();
  cells.progress.append(bar.node);
  const { group, buttons } = actionButtons(task.task_id, "row");
  cells.actions.append(group);
  const tr = el("tr", { "data-task-id": task.task_id }, ...Object.values(cells));
  const row = { tr, cells, bar, buttons, label, key: null };
  updateRow(row, task);
  return row;
}

function updateRow(row, task) {
  const key = JSON.stringify([task.state, task.progress, task.rate_per_second, task.eta_seconds, task.pause_deadline]);
  if (row.key === key) return;
  row.key = key;
  const state = el("span", { class: "state-cell" }, badge(task.state));
  if (task.state === "paused" && task.pause_deadline) {
    state.append(el("span", { class: "countdown small-text", "data-deadline": task.pause_deadline,
      text: countdownText(task.pause_deadline) }));
  }
  row.cells.state.replaceChildren(state);
  setProgress(row.bar, percentOf(task), task.state, `Progress of ${row.label}`);
  const p = task.progress;
  row.cells.done.textContent = p.total == null ? formatAmount(p.done, p.unit)
    : `${formatAmount(p.done, p.unit)} of ${formatAmount(p.total, p.unit)}`;
  row.cells.rate.textContent = formatRate(task);
  row.cells.eta.textContent = task.eta_seconds == null ? "—" : formatDuration(task.eta_seconds);
  row.cells.created.textContent = formatCreated(task.created_at);
  row.cells.created.title = task.created_at;
  if (task.kind === "export") {
    // A date breaks only between words, never at its own hyphens.
    row.cells.target.replaceChildren(...describeTarget(task).split(" ").flatMap((word, i) =>
      [i ? " " : null, el("span", { class: "word", text: word })].filter(Boolean)));
  } else {
    row.cells.target.textContent = describeTarget(task);
  }
  updateButtons(row.buttons, task, row.label);
}

function renderList(page) {
  const seen = new Set();
  let previous = null;
  for (const task of page.tasks) {
    seen.add(task.task_id);
    let row = session.rows.get(task.task_id);
    if (row) updateRow(row, task);
    else {
      row = makeRow(task);
      session.rows.set(task.task_id, row);
    }
    // Keep the server's order without re-creating rows (a focused button keeps its focus).
    const expected = previous ? previous.nextSibling : ui.rows.firstChild;
    if (expected !== row.tr) ui.rows.insertBefore(row.tr, expected);
    previous = row.tr;
  }
  for (const [id, row] of session.rows) {
    if (!seen.has(id)) {
      row.tr.remove();
      session.rows.delete(id);
    }
  }
  ui.empty.hidden = page.tasks.length > 0;
  const first = page.total ? page.offset + 1 : 0;
  const last = page.offset + page.tasks.length;
  ui.pageInfo.textContent = page.total ? `${first}–${last} of ${numberFormat.format(page.total)}` : "0 tasks";
  ui.prev.disabled = page.offset === 0;
  ui.next.disabled = !page.next;
}

function listPath() {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String(session.offset) });
  if (ui.filterState.value) params.set("state", ui.filterState.value);
  if (ui.filterKind.value) params.set("kind", ui.filterKind.value);
  return `/api/tasks/?${params}`;
}

async function pollList() {
  const generation = session.generation;
  clearTimeout(session.listTimer);
  // A hidden tab asks nothing; it catches up the moment it is shown again (see wire()).
  if (document.hidden) return;
  const started = performance.now();
  try {
    const answer = await api(listPath(), { etag: session.listEtag });
    if (generation !== session.generation) return;
    if (answer.status === 200) {
      session.listEtag = answer.etag;
      renderList(answer.body);
    }
    ui.listError.textContent = "";
  } catch (error) {
    if (generation !== session.generation) return;
    ui.listError.textContent = `Could not load the tasks. ${error.message}`;
  }
  if (generation === session.generation && session.key) {
    session.listTimer = setTimeout(pollList, Math.max(0, POLL_MS - (performance.now() - started)));
  }
}

function restartList() {
  session.generation += 1;
  session.listEtag = null;
  pollList();
}

// ---------- task detail ----------

function definitionList(entries) {
  const dl = el("dl", { class: "facts" });
  for (const [term, value] of entries) {
    if (value == null || value === "") continue;
    dl.append(el("dt", { text: term }), el("dd", { text: String(value) }));
  }
  return dl;
}

function section(title, ...content) {
  return el("section", { class: "detail-section" }, el("h3", { text: title }), ...content);
}

function checkpointText(task) {
  const c = task.checkpoint;
  if (!c) return task.state === "queued" ? "not started" : "—";
  if (task.kind === "upload") {
    return `line ${numberFormat.format(c.line ?? 0)}, byte ${numberFormat.format(c.offset ?? 0)} ` +
      `(${numberFormat.format(c.rows_inserted ?? 0)} rows inserted so far)`;
  }
  return `${formatAmount(task.progress.done, task.progress.unit)} written`;
}

function renderDetailHead(task) {
  const label = `${task.kind} ${describeTarget(task)}`;
  ui.detailTitle.textContent = `${task.kind[0].toUpperCase()}${task.kind.slice(1)} · ${describeTarget(task)}`;
  ui.detailState.replaceChildren(badge(task.state), el("span", { class: "muted", text: ` ${STATE_HELP[task.state] || ""}` }));
  if (task.state === "paused" && task.pause_deadline) {
    ui.detailCountdown.dataset.deadline = task.pause_deadline;
    ui.detailCountdown.textContent = countdownText(task.pause_deadline);
  } else {
    delete ui.detailCountdown.dataset.deadline;
    ui.detailCountdown.textContent = "";
  }
  if (!session.detailBar) {
    session.detailBar = progressBar();
    session.detailAmount = el("span", { class: "muted" });
    ui.detailProgress.replaceChildren(session.detailBar.node, session.detailAmount);
  }
  setProgress(session.detailBar, percentOf(task), task.state, `Progress of ${label}`);
  const p = task.progress;
  session.detailAmount.textContent = `${formatAmount(p.done, p.unit)} of ${formatAmount(p.total, p.unit)}` +
    (task.rate_per_second != null ? ` · ${formatRate(task)}` : "") +
    (task.eta_seconds != null ? ` · ETA ${formatDuration(task.eta_seconds)}` : "");
  if (!session.detailButtons) {
    const { group, buttons } = actionButtons(task.task_id, "detail");
    session.detailButtons = buttons;
    session.detailDownload = el("button", { type: "button", class: "primary small", text: "Download CSV" });
    session.detailDownload.addEventListener("click", () => download(session.detailId, session.detailDownload));
    ui.detailActions.replaceChildren(group, session.detailDownload);
  }
  updateButtons(session.detailButtons, task, label);
  session.detailDownload.hidden = !(task.kind === "export" && task.state === "completed");
}

function renderDetailBody(task) {
  const p = task.params || {};
  const parts = [];
  const params = task.kind === "upload"
    ? [["File", p.filename], ["Size", formatBytes(p.size_bytes)]]
    : [["From", p.from_date], ["To", p.to_date], ["Form id", p.form_id || "all forms"], ["File name", p.filename]];
  parts.push(section("Parameters", definitionList([["Task id", task.task_id], ...params])));
  parts.push(section("Timeline", definitionList([
    ["Created", task.created_at && dateTimeFormat.format(new Date(task.created_at))],
    ["Started", task.started_at && dateTimeFormat.format(new Date(task.started_at))],
    ["Paused", task.paused_at && dateTimeFormat.format(new Date(task.paused_at))],
    ["Finished", task.finished_at && dateTimeFormat.format(new Date(task.finished_at))],
    ["Checkpoint", checkpointText(task)],
    ["Revoke reason", task.revoke_reason === "pause_timeout" ? "paused too long (pause timeout)" : task.revoke_reason],
  ])));
  const counts = task.result || task.checkpoint || {};
  if (task.kind === "upload" && (task.result || task.checkpoint)) {
    parts.push(section(task.result ? "Result" : "So far", definitionList([
      ["Rows inserted", numberFormat.format(counts.rows_inserted ?? 0)],
      ["Rows skipped (duplicate)", numberFormat.format(counts.rows_skipped_duplicate ?? 0)],
      ["Rows rejected", numberFormat.format(counts.rows_rejected ?? 0)],
    ])));
    const rejections = counts.rejections || [];
    if (rejections.length) {
      const body = el("tbody", {}, ...rejections.map((r) => el("tr", {}, el("td", { class: "num", text: String(r.line) }),
        el("td", { text: r.reason }))));
      parts.push(section(`First rejections (${rejections.length})`, el("div", { class: "table-wrap" },
        el("table", { class: "compact" }, el("thead", {}, el("tr", {}, el("th", { text: "Line", scope: "col" }),
          el("th", { text: "Reason", scope: "col" }))), body))));
    }
  } else if (task.kind === "export" && task.result) {
    parts.push(section("Result", definitionList([["Rows", numberFormat.format(task.result.rows)],
      ["Size", formatBytes(task.result.bytes)]])));
  }
  if (task.error) {
    parts.push(section("Error", el("p", { class: "error", text: task.error.message || JSON.stringify(task.error) })));
  }
  if (task.events) {
    const body = el("tbody", {}, ...task.events.map((e) => el("tr", {},
      el("td", { text: dateTimeFormat.format(new Date(e.at)) }), el("td", { text: e.actor }),
      el("td", { text: `${e.from_state ? `${e.from_state} → ` : ""}${e.to_state}` }),
      el("td", { text: e.reason || "" }))));
    parts.push(section("Event log", el("div", { class: "table-wrap" }, el("table", { class: "compact events" },
      el("thead", {}, el("tr", {}, ...["When", "Who", "What", "Why"].map((h) => el("th", { text: h, scope: "col" })))),
      body))));
  }
  ui.detailBody.replaceChildren(...parts);
}

async function refreshDetail(force = false) {
  const id = session.detailId;
  clearTimeout(session.detailTimer);
  if (!id || document.hidden) return;
  try {
    const answer = await api(`/api/tasks/${id}/?events=1`, { etag: force ? null : session.detailEtag });
    if (session.detailId !== id) return;
    if (answer.status === 200) {
      session.detailEtag = answer.etag;
      session.detailTask = answer.body;
      renderDetailHead(answer.body);
      renderDetailBody(answer.body);
    }
  } catch (error) {
    if (session.detailId !== id) return;
    ui.detailBody.replaceChildren(el("p", { class: "error", text: error.message }));
  }
  if (session.detailId === id) session.detailTimer = setTimeout(refreshDetail, POLL_MS);
}

function resetDetail() {
  clearTimeout(session.detailTimer);
  Object.assign(session, { detailId: null, detailEtag: null, detailTask: null, detailBar: null,
    detailButtons: null, detailDownload: null });
  ui.detailProgress.replaceChildren();
  ui.detailActions.replaceChildren();
  ui.detailBody.replaceChildren();
}

function openDetail(taskId) {
  resetDetail();
  session.detailId = taskId;
  ui.detailTitle.textContent = "Loading…";
  ui.detailState.replaceChildren();
  ui.detail.showModal();
  refreshDetail(true);
}

// ---------- download ----------

async function download(taskId, button) {
  // The download needs the Authorization header, so it is fetched here and saved from a blob.
  hideNotice();
  if (button) button.disabled = true;
  try {
    const response = await fetch(`/api/tasks/${taskId}/download`, {
      headers: { Authorization: `Bearer ${session.key}` }, cache: "no-store",
    });
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    const disposition = response.headers.get("Content-Disposition") || "";
    const match = /filename\*=UTF-8''([^;]+)|filename="?([^";]+)"?/i.exec(disposition);
    const name = match ? decodeURIComponent(match[1] || match[2]) : `export-${taskId}.csv`;
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (error) {
    showNotice(`Could not download the export. ${error.message}`);
  } finally {
    if (button) button.disabled = false;
  }
}

// ---------- upload and export forms ----------

function statusBlock(container) {
  const bar = progressBar();
  const text = el("p", { class: "status-text" });
  const extra = el("div", { class: "status-extra" });
  container.replaceChildren(bar.node, text, extra);
  container.hidden = false;
  return { bar, text, extra };
}

function showFormError(container, message) {
  container.replaceChildren(el("p", { class: "error", role: "alert", text: message }));
}

async function followTask(kind, taskId, block, etag = null) {
  // The form shows its task's progress until the task ends (or another one is started from this form).
  if (session.tracked[kind] !== taskId) return;
  let next = etag;
  try {
    const answer = await api(`/api/tasks/${taskId}/`, { etag });
    if (session.tracked[kind] !== taskId) return;
    if (answer.status === 200) {
      next = answer.etag;
      const task = answer.body;
      block.container.dataset.state = task.state;
      setProgress(block.bar, percentOf(task), task.state, `Progress of the ${kind}`);
      const p = task.progress;
      let line = `${formatAmount(p.done, p.unit)} of ${formatAmount(p.total, p.unit)}`;
      if (task.state === "completed" && kind === "upload" && task.result) {
        const r = task.result;
        line = `${numberFormat.format(r.rows_inserted)} rows inserted, ${numberFormat.format(r.rows_skipped_duplicate)} ` +
          `skipped, ${numberFormat.format(r.rows_rejected)} rejected`;
      } else if (task.state === "completed" && kind === "export" && task.result) {
        line = `${numberFormat.format(task.result.rows)} rows, ${formatBytes(task.result.bytes)}`;
      }
      block.text.replaceChildren(badge(task.state), el("span", { text: line }));
      if (task.state === "completed" && kind === "export" && !block.extra.firstChild) {
        const button = el("button", { type: "button", class: "primary", text: "Download CSV" });
        button.addEventListener("click", () => download(taskId, button));
        block.extra.append(button);
      }
      if (TERMINAL.has(task.state)) return;
    }
  } catch (error) {
    block.text.textContent = error.message;
  }
  setTimeout(() => followTask(kind, taskId, block, next), POLL_MS);
}

function track(kind, container, task) {
  session.tracked[kind] = task.task_id;
  container.dataset.taskId = task.task_id;
  const block = { ...statusBlock(container), container };
  followTask(kind, task.task_id, block);
  session.listEtag = null;
}

function chooseFile(file) {
  session.chosenFile = file || null;
  ui.uploadFileName.textContent = file ? `${file.name} (${formatBytes(file.size)})` : "";
}

function upload(event) {
  event.preventDefault();
  const file = session.chosenFile;
  if (!file) {
    showFormError(ui.uploadStatus, "Choose a CSV file first.");
    return;
  }
  session.tracked.upload = null;
  delete ui.uploadStatus.dataset.taskId;
  const block = statusBlock(ui.uploadStatus);
  block.text.textContent = "Sending the file…";
  ui.uploadSubmit.disabled = true;
  const form = new FormData();
  form.append("file", file, file.name);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/upload-file/");
  xhr.setRequestHeader("Authorization", `Bearer ${session.key}`);
  xhr.setRequestHeader("Accept", "application/json");
  xhr.upload.onprogress = (e) => {
    if (!e.lengthComputable) return;
    setProgress(block.bar, (100 * e.loaded) / e.total, "sending", "Upload of the file");
    block.text.textContent = `Sending the file… ${formatBytes(e.loaded)} of ${formatBytes(e.total)}`;
  };
  xhr.onload = () => {
    ui.uploadSubmit.disabled = false;
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch { /* not JSON: described by the status */ }
    if (xhr.status === 202 || xhr.status === 200) {
      track("upload", ui.uploadStatus, body);
    } else {
      if (xhr.status === 401) signOut("Your API key is no longer accepted. Sign in again.");
      showFormError(ui.uploadStatus, `The upload was refused. ${plainProblem(xhr.status, body)}`);
    }
  };
  xhr.onerror = () => {
    ui.uploadSubmit.disabled = false;
    showFormError(ui.uploadStatus, "The upload failed: the connection to the server was lost.");
  };
  xhr.send(form);
}

async function startExport(event) {
  event.preventDefault();
  const from = $("export-from").value, to = $("export-to").value, formId = $("export-form-id").value.trim();
  if (!from || !to) {
    showFormError(ui.exportStatus, "Choose both a From and a To date.");
    return;
  }
  const params = new URLSearchParams({ from_date: from, to_date: to });
  if (formId) params.set("form_id", formId);
  session.tracked.export = null;
  delete ui.exportStatus.dataset.taskId;
  ui.exportSubmit.disabled = true;
  try {
    const { body } = await api(`/api/export/?${params}`, { method: "POST" });
    track("export", ui.exportStatus, body);
  } catch (error) {
    showFormError(ui.exportStatus, `The export was refused. ${error.message}`);
  } finally {
    ui.exportSubmit.disabled = false;
  }
}

// ---------- sign in / out ----------

async function signIn(key) {
  session.key = key;
  try {
    await api("/api/tasks/?limit=1");
  } catch (error) {
    session.key = null;
    ui.signInError.textContent = error.status === 401
      ? "That API key was not accepted. Check that you pasted the whole key, or create a new one with `collect keys create`."
      : `Could not sign in. ${error.message}`;
    return false;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  ui.signInError.textContent = "";
  ui.keyInput.value = "";
  ui.signInView.hidden = true;
  ui.appView.hidden = false;
  ui.signOut.hidden = false;
  session.offset = 0;
  restartList();
  return true;
}

function signOut(message = "") {
  sessionStorage.removeItem(KEY_STORAGE);
  session.key = null;
  session.generation += 1;
  clearTimeout(session.listTimer);
  session.tracked = { upload: null, export: null };
  if (ui.detail.open) ui.detail.close();
  resetDetail();
  for (const row of session.rows.values()) row.tr.remove();
  session.rows.clear();
  ui.uploadStatus.replaceChildren();
  ui.exportStatus.replaceChildren();
  hideNotice();
  ui.appView.hidden = true;
  ui.signOut.hidden = true;
  ui.signInView.hidden = false;
  ui.signInError.textContent = message;
  ui.keyInput.focus();
}

// ---------- wiring ----------

function tickCountdowns() {
  for (const node of document.querySelectorAll("[data-deadline]")) node.textContent = countdownText(node.dataset.deadline);
}

function wire() {
  ui.signInForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = ui.keyInput.value.trim();
    if (!key) {
      ui.signInError.textContent = "Enter your API key.";
      return;
    }
    signIn(key);
  });
  ui.signOut.addEventListener("click", () => signOut());
  ui.prev.addEventListener("click", () => { session.offset = Math.max(0, session.offset - PAGE_SIZE); restartList(); });
  ui.next.addEventListener("click", () => { session.offset += PAGE_SIZE; restartList(); });
  for (const filter of [ui.filterState, ui.filterKind]) {
    filter.addEventListener("change", () => { session.offset = 0; restartList(); });
  }
  ui.uploadFile.addEventListener("change", () => chooseFile(ui.uploadFile.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    ui.uploadForm.addEventListener(name, (event) => { event.preventDefault(); ui.dropzone.classList.add("over"); });
  }
  ui.uploadForm.addEventListener("dragleave", (event) => {
    if (!ui.uploadForm.contains(event.relatedTarget)) ui.dropzone.classList.remove("over");
  });
  ui.uploadForm.addEventListener("drop", (event) => {
    event.preventDefault();
    ui.dropzone.classList.remove("over");
    if (event.dataTransfer.files.length) chooseFile(event.dataTransfer.files[0]);
  });
  ui.uploadForm.addEventListener("submit", upload);
  ui.exportForm.addEventListener("submit", startExport);
  $("detail-close").addEventListener("click", () => ui.detail.close());
  ui.detail.addEventListener("close", resetDetail);
  setInterval(tickCountdowns, 1000);
  document.addEventListener("visibilitychange", () => {
    if (document.hidden || !session.key) return;
    pollList();
    refreshDetail();
  });
  const today = new Date().toISOString().slice(0, 10);
  $("export-to").value = today;
  $("export-from").value = `${today.slice(0, 4)}-01-01`;
}

wire();
const stored = sessionStorage.getItem(KEY_STORAGE);
if (stored) {
  signIn(stored).then((ok) => { if (!ok) signOut("Your saved API key is no longer accepted. Sign in again."); });
} else {
  signOut();
}
