// The page: sign in or up, then the todo list and the devices, kept live by LiveTodos.
//
// Each browser is one device (one session): the token is kept in localStorage ("keep me
// signed in") or in sessionStorage (this tab only). Other tabs of the same browser follow a
// sign-in or sign-out made in one of them (the "storage" event).

import { Api } from "./api.js";
import { $, ago, h } from "./dom.js";
import { LIVE, LiveTodos, OFFLINE, RECONNECTING, STOPPED } from "./live.js";

const LOGIN_KEY = "nursery.login";
const RENDER_DELAY_MS = 16;
const ALERT_MS = 6000;
const STATUS_TEXT = {
  connecting: "Connecting…",
  [LIVE]: "Live",
  [RECONNECTING]: "Reconnecting…",
  [OFFLINE]: "Offline",
  [STOPPED]: "Offline",
};
const SIGNED_OUT_HERE = "This device was signed out. Sign in again to continue.";

const api = new Api({ onUnauthorized: () => signOutLocally(SIGNED_OUT_HERE) });
const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;

/** The signed-in state, or null. */
let login = null; // {token, user, sessionId}
let live = null;
let filter = "all";
let sessions = new Map(); // id → session JSON
let online = new Set();
let presenceSeq = 0; // bumped by each presence frame, so an older GET does not override it

// -- the stored login ---------------------------------------------------------------------

function storedLogin() {
  for (const storage of [sessionStorage, localStorage]) {
    try {
      const value = JSON.parse(storage.getItem(LOGIN_KEY));
      if (value && value.token) return value;
    } catch {
      // unreadable: ignore
    }
  }
  return null;
}

function storeLogin(value, remember) {
  (remember ? localStorage : sessionStorage).setItem(LOGIN_KEY, JSON.stringify(value));
  (remember ? sessionStorage : localStorage).removeItem(LOGIN_KEY);
}

function forgetLogin() {
  localStorage.removeItem(LOGIN_KEY);
  sessionStorage.removeItem(LOGIN_KEY);
}

// Another tab of this browser signed in or out.
window.addEventListener("storage", (event) => {
  if (event.key !== LOGIN_KEY && event.key !== null) return;
  const stored = storedLogin();
  if (login && (!stored || stored.token !== login.token)) {
    // The storage already says what the other tab chose: leave it as it is.
    signOutLocally(stored ? "" : "You signed out in another tab.", { forget: false });
  }
  if (!login && stored) enter(stored);
});

// -- views --------------------------------------------------------------------------------

function show(view) {
  $("#loading").hidden = true;
  $("#signin-view").hidden = view !== "signin";
  $("#app-view").hidden = view !== "app";
}

/** Show the signed-in page for `value` and go live. `focus`: put the cursor in the new-todo
 * field (after typing a password; not on a page load, where a phone would pop up its
 * keyboard). */
function enter(value, { focus = false } = {}) {
  login = value;
  api.token = value.token;
  sessions = new Map();
  online = new Set();
  $("#whoami").textContent = value.user.email;
  show("app");
  live = new LiveTodos({
    api,
    url: wsUrl,
    token: value.token,
    onTodos: scheduleRender,
    onState: renderStatus,
    onWelcome: () => refreshSessions(),
    onSession: sessionFrame,
    onPresence: (ids) => {
      presenceSeq++;
      online = new Set(ids);
      renderDevices();
    },
    onSignedOut: () => signOutLocally(SIGNED_OUT_HERE),
  });
  renderStatus(live.state);
  renderTodos();
  live.start(); // the devices are fetched at each welcome
  if (focus) $("#new-title").focus();
}

/** Leave the signed-in view (the session is already over, or being ended); `forget`: remove
 * the stored login too. */
function signOutLocally(message = "", { forget = true } = {}) {
  if (!login) return;
  live?.stop();
  live = null;
  login = null;
  api.token = null;
  if (forget) forgetLogin();
  rows.clear();
  $("#todo-list").replaceChildren();
  $("#device-list").replaceChildren();
  $("#signin-notice").textContent = message;
  $("#signin-error").textContent = "";
  show("signin");
  $("#email").focus();
}

function alertUser(message) {
  const el = $("#alert");
  el.textContent = message;
  clearTimeout(alertUser.timer);
  alertUser.timer = setTimeout(() => { el.textContent = ""; }, ALERT_MS);
}

/** Run a REST action; show its error (a 401 has already signed us out). */
async function attempt(action) {
  try {
    return await action();
  } catch (error) {
    if (error.status !== 401) alertUser(error.message);
    return undefined;
  }
}

// -- sign in / create account -------------------------------------------------------------

function guessDevice() {
  const ua = navigator.userAgent;
  const browser = /Edg\//.test(ua) ? "Edge" : /Firefox\//.test(ua) ? "Firefox"
    : /Chrom(e|ium)\//.test(ua) ? "Chrome" : /Safari\//.test(ua) ? "Safari" : "Browser";
  const system = /Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iOS"
    : /Mac OS X/.test(ua) ? "macOS" : /Windows/.test(ua) ? "Windows"
    : /Linux/.test(ua) ? "Linux" : "";
  return system ? `${browser} on ${system}` : browser;
}

$("#signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const mode = event.submitter?.value === "register" ? "register" : "login";
  const email = form.email.value.trim();
  const password = form.password.value;
  const device = form.device.value.trim() || guessDevice();
  for (const id of ["email-error", "password-error", "signin-error", "signin-notice"]) {
    $(`#${id}`).textContent = "";
  }
  form.email.removeAttribute("aria-invalid");
  form.password.removeAttribute("aria-invalid");
  if (!email || !password) {
    const field = !email ? form.email : form.password;
    field.setAttribute("aria-invalid", "true");
    $(`#${field.id}-error`).textContent = "Required.";
    field.focus();
    return;
  }
  const buttons = form.querySelectorAll("button");
  buttons.forEach((b) => { b.disabled = true; });
  try {
    const result = await api.post(`/api/auth/${mode}`, { email, password, device }, { retry: false });
    const value = { token: result.token, user: result.user, sessionId: result.session.id };
    storeLogin(value, form.remember.checked);
    form.password.value = "";
    enter(value, { focus: true });
  } catch (error) {
    const fields = error.fields || {};
    let focused = false;
    for (const name of ["email", "password"]) {
      if (fields[name]) {
        form[name].setAttribute("aria-invalid", "true");
        $(`#${name}-error`).textContent = fields[name];
        if (!focused) form[name].focus();
        focused = true;
      }
    }
    if (!focused) $("#signin-error").textContent = error.message;
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
});

$("#signout").addEventListener("click", async () => {
  const token = login?.token;
  signOutLocally("You signed out.");
  // Best effort: the session ends on the server too (no retries: the token is forgotten).
  if (token) {
    fetch("/api/auth/logout", { method: "POST", headers: { Authorization: `Bearer ${token}` } })
      .catch(() => {});
  }
});

// -- connection status --------------------------------------------------------------------

function renderStatus(state) {
  const el = $("#status");
  el.dataset.state = state;
  $("#status-text").textContent = STATUS_TEXT[state] ?? state;
  el.title = state === LIVE && live?.instance ? `Connected to ${live.instance}` : "";
  renderDevices(); // this device's own dot follows the connection
}

// -- todos --------------------------------------------------------------------------------

const rows = new Map(); // todo id → its <li>
let renderTimer = null;

function scheduleRender() {
  if (renderTimer === null) {
    renderTimer = setTimeout(() => {
      renderTimer = null;
      renderTodos();
    }, RENDER_DELAY_MS);
  }
}

function byCreation(a, b) {
  return a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1
    : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

function renderTodos() {
  if (!live) return;
  const all = [...live.todos.values()].sort(byCreation);
  const visible = all.filter((t) => filter === "all" || (filter === "done") === t.done);
  const list = $("#todo-list");
  const keep = new Set(visible.map((t) => t.id));
  for (const [id, row] of rows) {
    if (!keep.has(id)) {
      row.remove();
      rows.delete(id);
    }
  }
  let previous = null;
  for (const todo of visible) {
    let row = rows.get(todo.id);
    if (!row) {
      row = todoRow(todo.id);
      rows.set(todo.id, row);
    }
    updateRow(row, todo);
    const expected = previous ? previous.nextSibling : list.firstChild;
    if (expected !== row) list.insertBefore(row, expected);
    previous = row;
  }
  const left = all.filter((t) => !t.done).length;
  $("#count").textContent = live.loaded
    ? `${left} of ${all.length} left` : "Loading…";
  const empty = $("#empty");
  empty.hidden = !live.loaded || visible.length > 0;
  empty.textContent = all.length === 0 ? "Nothing to do yet. Add a todo above."
    : filter === "done" ? "Nothing done yet." : "All done!";
}

function todoRow(id) {
  const box = h("input", { type: "checkbox", id: `todo-${id}`, class: "toggle" });
  const title = h("label", { for: `todo-${id}`, class: "title" });
  const edit = h("button", { type: "button", class: "icon edit" }, "✎");
  const remove = h("button", { type: "button", class: "icon delete" }, "✕");
  const row = h("li", { class: "todo", dataset: { id } }, box, title, edit, remove);
  box.addEventListener("change", () => toggle(id, box.checked));
  // The title is the checkbox's label: a click on it toggles (a big target on a phone), so
  // editing is the ✎ button's job only (a double click would toggle twice).
  edit.addEventListener("click", () => startEdit(row));
  remove.addEventListener("click", () => removeTodo(row));
  return row;
}

function updateRow(row, todo) {
  row.todo = todo;
  row.classList.toggle("done", todo.done);
  const box = row.querySelector(".toggle");
  box.checked = todo.done;
  if (!row.classList.contains("editing")) row.querySelector(".title").textContent = todo.title;
  row.querySelector(".edit").setAttribute("aria-label", `Edit “${todo.title}”`);
  row.querySelector(".delete").setAttribute("aria-label", `Delete “${todo.title}”`);
}

function startEdit(row) {
  if (row.classList.contains("editing")) return;
  const todo = row.todo;
  const label = row.querySelector(".title");
  const input = h("input", {
    type: "text", class: "edit-title", value: todo.title, maxlength: "500",
    "aria-label": `New title for “${todo.title}”`,
  });
  let finished = false;
  const finish = async (save) => {
    if (finished) return;
    finished = true;
    const title = input.value.trim();
    const hadFocus = document.activeElement === input;
    row.classList.remove("editing");
    input.replaceWith(label);
    if (hadFocus) row.querySelector(".edit").focus();
    if (save && title && title !== todo.title) {
      label.textContent = title;
      const mirror = live;
      try {
        const result = await api.patch(`/api/todos/${todo.id}`, { title, if_rev: todo.rev });
        mirror?.applyLocal(result.todo);
      } catch (error) {
        if (error.status === 409) {
          alertUser(`“${todo.title}” was changed on another device meanwhile: your edit was not saved.`);
        } else if (error.status !== 401) {
          alertUser(error.message);
        }
      }
    }
    if (live) updateRow(row, live.todos.get(todo.id) ?? row.todo);
  };
  input.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" && event.key !== "Escape") return;
    // Else the key, once focus is back on the edit button, would press it again.
    event.preventDefault();
    finish(event.key === "Enter");
  });
  input.addEventListener("blur", () => finish(true));
  row.classList.add("editing");
  label.replaceWith(input);
  input.focus();
  input.select();
}

// Each write applies its answer to the mirror it was made for (`mirror`): if the user
// signed out meanwhile, that mirror is stopped and nobody sees it.

async function toggle(id, done) {
  const mirror = live;
  const result = await attempt(() => api.patch(`/api/todos/${id}`, { done }));
  if (result) mirror?.applyLocal(result.todo);
  else scheduleRender(); // put the checkbox back
}

async function removeTodo(row) {
  const id = row.dataset.id;
  // Keep keyboard users in the list: focus moves to the next row (or the previous, or the
  // new-todo field).
  const neighbour = row.nextElementSibling || row.previousElementSibling;
  const hadFocus = row.contains(document.activeElement);
  const mirror = live;
  try {
    await api.delete(`/api/todos/${id}`);
  } catch (error) {
    if (error.status !== 404) { // 404: already deleted elsewhere
      if (error.status !== 401) alertUser(error.message);
      return;
    }
  }
  mirror?.removeLocal(id);
  if (mirror !== live) return;
  renderTodos();
  if (hadFocus) (neighbour?.querySelector(".toggle") ?? $("#new-title")).focus();
}

$("#add-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("#new-title");
  const title = input.value.trim();
  if (!title) return;
  input.value = "";
  const mirror = live;
  const result = await attempt(() => api.post("/api/todos", { title }));
  if (result) mirror?.applyLocal(result.todo);
  else if (!input.value) input.value = title; // not saved: give the text back
});

for (const button of document.querySelectorAll("[data-filter]")) {
  button.addEventListener("click", () => {
    filter = button.dataset.filter;
    for (const other of document.querySelectorAll("[data-filter]")) {
      other.setAttribute("aria-pressed", String(other === button));
    }
    renderTodos();
  });
}

// -- devices ------------------------------------------------------------------------------

async function refreshSessions() {
  const seq = presenceSeq;
  const asked = login;
  const result = await attempt(() => api.get("/api/sessions"));
  if (!result || !login || login !== asked) return;
  sessions = new Map(result.sessions.map((s) => [s.id, s]));
  if (seq === presenceSeq) online = new Set(result.sessions.filter((s) => s.online).map((s) => s.id));
  renderDevices();
}

function sessionFrame(frame) {
  const session = frame.session;
  if (frame.op === "revoked") {
    if (login && session.id === login.sessionId) {
      signOutLocally(SIGNED_OUT_HERE);
      return;
    }
    sessions.delete(session.id);
  } else {
    sessions.set(session.id, session);
  }
  renderDevices();
}

function renderDevices() {
  if (!login) return;
  const mine = login.sessionId;
  const ordered = [...sessions.values()].sort((a, b) =>
    (b.id === mine) - (a.id === mine) || byCreation(a, b));
  const items = ordered.map((s) => {
    const current = s.id === mine;
    const isOnline = current ? live?.state === LIVE : online.has(s.id);
    const detail = isOnline ? "online" : `last seen ${ago(s.last_seen_at)}`;
    const name = h("span", { class: "device-name" }, s.device);
    const revoke = h("button", {
      type: "button", class: "quiet",
      "aria-label": current ? "Sign out this device" : `Sign out “${s.device}”`,
      onclick: () => (current ? $("#signout").click() : revokeSession(s.id)),
    }, "Sign out");
    return h("li", { class: `device${isOnline ? " online" : ""}`, dataset: { id: s.id } },
      h("span", { class: "dot", "aria-hidden": "true" }),
      h("div", { class: "device-text" },
        name, current ? h("span", { class: "badge" }, "this device") : null,
        h("span", { class: "device-detail" }, `${detail} · signed in ${ago(s.created_at)}`)),
      revoke);
  });
  $("#device-list").replaceChildren(...items);
  $("#signout-others").hidden = ordered.length < 2;
}

async function revokeSession(id) {
  const ok = await attempt(async () => {
    await api.delete(`/api/sessions/${id}`);
    return true;
  });
  if (ok) {
    sessions.delete(id);
    renderDevices();
  }
}

$("#signout-others").addEventListener("click", async () => {
  const result = await attempt(() => api.delete("/api/sessions"));
  if (result) refreshSessions();
});

setInterval(renderDevices, 60_000); // "last seen 5 minutes ago" ages

// -- start --------------------------------------------------------------------------------

$("#device").value = guessDevice();
const saved = storedLogin();
if (saved) enter(saved);
else show("signin");
