// The page: sign in or up, then the todo list and the devices. It works offline: what the
// user sees is the server's state as last known (kept in IndexedDB, followed live by
// LiveTodos) with the user's unsent writes (the Outbox) laid over it.
//
// Each browser is one device (one session): the token is kept in localStorage ("keep me
// signed in") or in sessionStorage (this tab only). Other tabs of the same browser follow a
// sign-in or sign-out made in one of them (the "storage" event), and each other's outbox
// (a BroadcastChannel says when it changed).

import { Api } from "./api.js";
import { $, ago, h } from "./dom.js";
import { dayAsDue, dueDay, parseNewTodo, parseTags } from "./format.js";
import { LIVE, LiveTodos, OFFLINE, RECONNECTING, STOPPED } from "./live.js";
import { Outbox, view } from "./outbox.js";
import { registerServiceWorker } from "./pwa.js";
import { todoRow, updateRow } from "./rows.js";
import { LocalStore } from "./store.js";

const LOGIN_KEY = "nursery.login";
const RENDER_DELAY_MS = 16;
const ALERT_MS = 8000;
const UNDO_MS = 6000;
const ANNOUNCE_AT_MOST = 3; // more changes at once are counted, not read out one by one
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
let store = null; // LocalStore
let live = null; // LiveTodos
let outbox = null; // Outbox
let channel = null; // BroadcastChannel to this device's other tabs
let filter = "all";
let sessions = new Map(); // id → session JSON
let online = new Set();
let presenceSeq = 0; // bumped by each presence frame, so an older GET does not override it
let shown = new Map(); // id → the todo as the user sees it now

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

/** Show the signed-in page for `value`: at once from what this device keeps, then live.
 * `focus`: put the cursor in the new-todo field (after typing a password; not on a page
 * load, where a phone would pop up its keyboard). */
async function enter(value, { focus = false } = {}) {
  login = value;
  api.token = value.token;
  let kept;
  let opened;
  try {
    opened = await LocalStore.open(value.user.id);
    kept = await opened.load();
  } catch (error) {
    opened?.close();
    if (login === value) alertUser(`This browser cannot keep your todos: ${error.message}`);
    return;
  }
  if (login !== value) { // signed out meanwhile
    opened.close();
    return;
  }
  store = opened;
  sessions = new Map(kept.sessions.map((s) => [s.id, s]));
  online = new Set();
  $("#whoami").textContent = value.user.email;
  show("app");
  live = new LiveTodos({
    api,
    url: wsUrl,
    token: value.token,
    todos: kept.todos,
    rev: kept.rev,
    onTodos: scheduleRender,
    onState: renderStatus,
    onWelcome: () => {
      refreshSessions();
      outbox?.flush(); // the server is reachable again
    },
    onSession: sessionFrame,
    onPresence: (ids) => {
      presenceSeq++;
      online = new Set(ids);
      renderDevices();
    },
    onSignedOut: () => signOutLocally(SIGNED_OUT_HERE),
    onStore: (change) => {
      if (change.snapshot) store.replaceTodos(change.snapshot, change.rev);
      else store.applyChanges(change);
    },
    onRemoteChange: (frame, before) => remoteChanges.push({ frame, before }),
  });
  const mirror = live;
  outbox = new Outbox({
    api,
    store,
    mirror: () => (live === mirror ? mirror : null),
    lockName: `nursery-outbox-${value.user.id}`,
    entries: kept.outbox,
    onChange: (here = true) => {
      scheduleRender();
      // Tell this device's other tabs (not when we only read what one of them stored:
      // that would echo back and forth).
      if (here) {
        const told = channel;
        outbox?.stored().then(() => { if (told && channel === told) told.postMessage("outbox"); });
      }
    },
    onRefused: alertUser,
    onConfirmed: (todo) => {
      if (todo.rev) ownRevs.add(todo.rev);
      else ownDeletes.add(todo.id);
    },
    onSignedOut: () => signOutLocally(SIGNED_OUT_HERE),
  });
  channel = new BroadcastChannel(`nursery-${value.user.id}`);
  channel.onmessage = () => outbox?.reload();
  renderStatus(live.state);
  renderTodos();
  renderDevices();
  live.start(); // the devices are fetched at each welcome
  outbox.flush();
  if (focus) $("#new-title").focus();
}

/** Leave the signed-in view (the session is already over, or being ended); `forget`: remove
 * the stored login and everything this device kept for it. */
function signOutLocally(message = "", { forget = true } = {}) {
  if (!login) return;
  const userId = login.user.id;
  live?.stop();
  outbox?.stop();
  channel?.close();
  store?.close();
  live = outbox = store = channel = null;
  login = null;
  api.token = null;
  if (forget) {
    forgetLogin();
    LocalStore.destroy(userId).catch(() => {});
  }
  rows.clear();
  shown = new Map();
  remoteChanges.length = 0;
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
  hideUndo();
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

/** Ask with the confirmation dialog; resolves true when the user said `ok`. */
function confirmWith(text, ok) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = ok;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
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
    await enter(value, { focus: true });
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
  const unsent = outbox?.pending ?? 0;
  if (unsent > 0) {
    const lose = unsent === 1 ? "1 change is" : `${unsent} changes are`;
    if (!await confirmWith(`${lose} not synced yet and will be lost if you sign out now.`,
      "Sign out anyway")) return;
  }
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

function matches(todo, query, tag) {
  if (filter !== "all" && (filter === "done") !== todo.done) return false;
  if (tag && !todo.tags.includes(tag)) return false;
  if (!query) return true;
  const text = `${todo.title}\n${todo.notes}\n${todo.tags.join(" ")}`.toLowerCase();
  return text.includes(query);
}

function renderTodos() {
  if (!live || !outbox) return;
  // While a create is on its way, its echo over /ws may come first, under an id we do not
  // know yet: it would show twice for a moment. Wait for the answer (the outbox then calls
  // onChange, which renders).
  if (outbox.inFlight?.op === "create") return;
  shown = view(live.todos, outbox.entries);
  const pendingIds = outbox.pendingIds();
  const conflicts = new Map(outbox.conflicts().map((e) => [e.id, e]));
  const all = [...shown.values()].sort(byCreation);
  const query = $("#search").value.trim().toLowerCase();
  renderTagOptions(all);
  const tag = $("#tag-filter").value;
  const visible = all.filter((t) => matches(t, query, tag));
  const list = $("#todo-list");
  const keep = new Set(visible.map((t) => t.id));
  const focusedRow = document.activeElement?.closest?.("#todo-list li");
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
      row = todoRow(todo.id, rowActions);
      rows.set(todo.id, row);
    }
    updateRow(row, todo, { pending: pendingIds.has(todo.id), conflict: conflicts.get(todo.id) });
    const expected = previous ? previous.nextSibling : list.firstChild;
    if (expected !== row) list.insertBefore(row, expected);
    previous = row;
  }
  if (focusedRow && !focusedRow.isConnected) $("#new-title").focus();
  const left = all.filter((t) => !t.done).length;
  $("#count").textContent = live.loaded ? `${left} of ${all.length} left` : "Loading…";
  const empty = $("#empty");
  empty.hidden = !live.loaded || visible.length > 0;
  empty.textContent = all.length === 0 ? "Nothing to do yet. Add a todo above."
    : query || tag ? "No todo matches." : filter === "done" ? "Nothing done yet." : "All done!";
  $("#clear-done").disabled = !all.some((t) => t.done);
  const unsent = outbox.pending;
  $("#pending").textContent = unsent === 0 ? ""
    : unsent === 1 ? "1 change not synced" : `${unsent} changes not synced`;
  announce();
}

function renderTagOptions(todos) {
  const select = $("#tag-filter");
  const tags = [...new Set(todos.flatMap((t) => t.tags))].sort();
  const current = select.value;
  if (current && !tags.includes(current)) tags.unshift(current); // keep the choice shown
  const have = [...select.options].slice(1).map((o) => o.value);
  if (have.join("\n") === tags.join("\n")) return;
  select.replaceChildren(h("option", { value: "" }, "All tags"),
    ...tags.map((t) => h("option", { value: t }, t)));
  select.value = current;
}

// The user's actions: each is an outbox entry, shown at once.

const rowActions = {
  toggle: (id, done) => {
    outbox?.update(id, { done });
  },
  edit: (id) => openEditor(id),
  remove: (id) => deleteTodos([id]),
  resolve: (key, keepMine) => outbox?.resolve(key, keepMine),
};

$("#add-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("#new-title");
  if (!input.value.trim() || !outbox) return;
  const { title, tags } = parseNewTodo(input.value);  // "buy milk #shop": a tag
  input.value = "";
  outbox.create(tags.length ? { title, tags } : { title });
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
$("#search").addEventListener("input", scheduleRender);
$("#search").addEventListener("keydown", (event) => {
  if (event.key === "Escape" && event.target.value) {
    event.target.value = "";
    renderTodos();
  }
});
$("#tag-filter").addEventListener("change", renderTodos);

$("#clear-done").addEventListener("click", () => {
  deleteTodos([...shown.values()].filter((t) => t.done).map((t) => t.id));
});

// -- delete, and its undo -----------------------------------------------------------------
// A delete goes out at once (other devices see it live). "Undo" is offered for a few
// seconds: a delete still in the outbox (offline) is simply taken back; one the server has
// done is undone by creating the todo again, with all its fields (a new id, so it comes back
// at the end of the list).

let undoable = null; // {keys, todos, timer}

function deleteTodos(ids) {
  if (!outbox || ids.length === 0) return;
  const focused = document.activeElement?.closest?.("#todo-list li");
  const next = focused && ids.includes(focused.dataset.id)
    && (focused.nextElementSibling || focused.previousElementSibling);
  const todos = ids.map((id) => shown.get(id)).filter(Boolean);
  const keys = todos.map((t) => outbox.remove(t.id, t.title).key);
  offerUndo(keys, todos,
    todos.length === 1 ? `Deleted “${todos[0].title}”.` : `Deleted ${todos.length} todos.`);
  renderTodos();
  // Keep keyboard users in the list: focus moves to the neighbouring row.
  if (focused) (next?.querySelector(".toggle") ?? $("#new-title")).focus();
}

function offerUndo(keys, todos, text) {
  hideUndo();
  $("#undo-text").textContent = text;
  $("#undo-toast").hidden = false;
  undoable = { keys, todos, timer: setTimeout(hideUndo, UNDO_MS) };
}

function hideUndo() {
  if (!undoable) return;
  clearTimeout(undoable.timer);
  undoable = null;
  $("#undo-toast").hidden = true;
}

function undo() {
  if (!undoable || !outbox) return;
  const { keys, todos } = undoable;
  hideUndo();
  const takenBack = outbox.takeBack(keys);
  todos.forEach((todo, i) => {
    if (takenBack.has(keys[i])) return;
    const { title, notes, done, due, tags } = todo;
    outbox.create({ title, notes, done, due, tags });
  });
  renderTodos();
}

$("#undo").addEventListener("click", undo);
$("#undo-close").addEventListener("click", hideUndo);

// -- the editor ---------------------------------------------------------------------------

let editing = null; // {id, todo}: the todo as it was when the editor opened

function openEditor(id) {
  const todo = shown.get(id);
  if (!todo) return;
  editing = { id, todo };
  const form = $("#editor-form");
  form.title.value = todo.title;
  form.notes.value = todo.notes;
  form.due.value = dueDay(todo.due);
  form.tags.value = todo.tags.join(", ");
  $("#editor-title").textContent = `Edit “${todo.title}”`;
  $("#editor").showModal();
  form.title.select();
}

$("#editor-form").addEventListener("submit", (event) => {
  const form = event.currentTarget;
  if (event.submitter?.value !== "save" || !editing || !outbox) return;
  const before = editing.todo;
  const after = {
    title: form.title.value.trim(),
    notes: form.notes.value,
    due: form.due.value,
    tags: parseTags(form.tags.value),
  };
  if (!after.title) {
    event.preventDefault(); // keep the dialog open: a todo needs a title
    form.title.focus();
    return;
  }
  const fields = {};
  const base = { rev: before.rev };
  if (after.title !== before.title) fields.title = after.title;
  if (after.notes !== before.notes) fields.notes = after.notes;
  if (after.due !== dueDay(before.due)) fields.due = dayAsDue(after.due);
  if (after.tags.join("\n") !== before.tags.join("\n")) fields.tags = after.tags;
  for (const field of Object.keys(fields)) base[field] = before[field];
  if (Object.keys(fields).length) outbox.update(editing.id, fields, base);
});

$("#editor").addEventListener("close", () => { editing = null; });
$("#editor-cancel").addEventListener("click", () => $("#editor").close());

// -- keyboard shortcuts (see the list in index.html) --------------------------------------

function typingIn(target) {
  return target.closest?.("input:not([type=checkbox]), textarea, select, [contenteditable]");
}

function moveFocus(step) {
  const boxes = [...document.querySelectorAll("#todo-list .toggle")];
  if (boxes.length === 0) return;
  const at = boxes.indexOf(document.activeElement);
  const to = at < 0 ? (step > 0 ? 0 : boxes.length - 1)
    : Math.min(boxes.length - 1, Math.max(0, at + step));
  boxes[to].focus();
}

document.addEventListener("keydown", (event) => {
  if (!login || event.defaultPrevented || event.altKey || document.querySelector("dialog[open]")) return;
  const undoKey = (event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z";
  if (undoKey && !typingIn(event.target)) {
    if (undoable) {
      event.preventDefault();
      undo();
    }
    return;
  }
  if (event.ctrlKey || event.metaKey || typingIn(event.target)) return;
  const row = event.target.closest?.("#todo-list li");
  const act = {
    n: () => $("#new-title").focus(),
    "/": () => $("#search").focus(),
    "?": () => $("#shortcuts").showModal(),
    j: () => moveFocus(1),
    ArrowDown: () => moveFocus(1),
    k: () => moveFocus(-1),
    ArrowUp: () => moveFocus(-1),
    u: () => undo(),
    x: () => row && row.querySelector(".toggle").click(),
    e: () => row && openEditor(row.dataset.id),
    Delete: () => row && deleteTodos([row.dataset.id]),
  }[event.key];
  if (!act) return;
  if (["ArrowDown", "ArrowUp"].includes(event.key) && !row) return; // scroll the page
  event.preventDefault();
  act();
});

$("#show-shortcuts").addEventListener("click", () => $("#shortcuts").showModal());

// -- changes from other devices, read out -------------------------------------------------
// /ws brings our own writes back too. They are told apart by what the outbox's answers said
// (the revision of each write, the id of each delete). An answer can come after its echo,
// so nothing is read out while a write is on its way.

const remoteChanges = []; // {frame, before}
const ownRevs = new Set();
const ownDeletes = new Set();

function announce() {
  if (!outbox || outbox.inFlight || remoteChanges.length === 0) return;
  const said = [];
  for (const { frame, before } of remoteChanges.splice(0)) {
    if (frame.op === "delete") {
      if (ownDeletes.delete(frame.id) || !before) continue;
      said.push(`“${before.title}” was deleted`);
    } else if (!ownRevs.delete(frame.rev)) {
      const todo = frame.todo;
      said.push(!before ? `“${todo.title}” was added`
        : before.done !== todo.done ? `“${todo.title}” was marked ${todo.done ? "done" : "not done"}`
        : `“${todo.title}” was changed`);
    }
  }
  if (said.length === 0) return;
  $("#announcer").textContent = said.length > ANNOUNCE_AT_MOST
    ? `${said.length} changes from another device.`
    : `On another device: ${said.join("; ")}.`;
}

// -- devices ------------------------------------------------------------------------------

async function refreshSessions() {
  const seq = presenceSeq;
  const asked = login;
  const result = await attempt(() => api.get("/api/sessions"));
  if (!result || !login || login !== asked) return;
  sessions = new Map(result.sessions.map((s) => [s.id, s]));
  store?.saveSessions(result.sessions);
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
    // This device signs out with the header's button: one "Sign out" for it, not two.
    const revoke = current ? null : h("button", {
      type: "button", class: "quiet",
      "aria-label": `Sign out “${s.device}”`,
      onclick: () => revokeSession(s.id),
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
  const others = sessions.size - 1;
  const which = others === 1 ? "your other device" : `your ${others} other devices`;
  if (!await confirmWith(`Sign out ${which}? They will need your password to sign in again.`,
    "Sign them out")) return;
  const result = await attempt(() => api.delete("/api/sessions"));
  if (result !== undefined) refreshSessions();
});

setInterval(renderDevices, 60_000); // "last seen 5 minutes ago" ages
window.addEventListener("online", () => outbox?.flush());

// -- start --------------------------------------------------------------------------------

registerServiceWorker({
  onUpdate: (apply) => {
    $("#update-toast").hidden = false;
    $("#update-apply").onclick = async () => {
      await outbox?.stored(); // the reload must not cut the last write's storing short
      apply();
    };
  },
});

$("#device").value = guessDevice();
const saved = storedLogin();
if (saved) enter(saved);
else show("signin");
