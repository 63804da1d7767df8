// One todo's row in the list: built once per todo (so focus stays put while it changes),
// then updated from the todo as the user sees it.
//
// The checkbox's label is the title alone (its accessible name); the due day, tags, notes,
// the "not synced yet" mark and a conflict are described beside it.

import { h } from "./dom.js";
import { dueDay, localDay, showDay } from "./format.js";

/** actions: {toggle(id, done), edit(id), remove(id), resolve(key, keepMine)} */
export function todoRow(id, actions) {
  const box = h("input", { type: "checkbox", id: `todo-${id}`, class: "toggle" });
  const title = h("label", { for: `todo-${id}`, class: "title" });
  const details = h("div", { class: "details", id: `todo-${id}-details` });
  const body = h("div", { class: "body" }, title, details);
  const pending = h("span", { class: "pending-mark", hidden: true },
    h("span", { "aria-hidden": "true" }, "◷"), h("span", { class: "visually-hidden" }, "not synced yet"));
  const edit = h("button", { type: "button", class: "icon edit", "aria-keyshortcuts": "e" }, "✎");
  const remove = h("button", { type: "button", class: "icon delete", "aria-keyshortcuts": "Delete" }, "✕");
  const conflict = h("div", { class: "conflict", hidden: true });
  const row = h("li", { class: "todo", dataset: { id } }, box, body, pending, edit, remove, conflict);
  box.setAttribute("aria-describedby", details.id);
  box.addEventListener("change", () => actions.toggle(row.dataset.id, box.checked));
  // The title is the checkbox's label: a click on it toggles (a big target on a phone), so
  // editing is the ✎ button's job.
  edit.addEventListener("click", () => actions.edit(row.dataset.id));
  remove.addEventListener("click", () => actions.remove(row.dataset.id));
  row.actions = actions;
  return row;
}

/** Show `todo`; `pending`: some of its writes are not on the server yet; `conflict`: an
 * outbox entry the server refused with 409 (see outbox.js), or null. */
export function updateRow(row, todo, { pending = false, conflict = null } = {}) {
  row.todo = todo;
  row.dataset.id = todo.id;
  row.classList.toggle("done", todo.done);
  row.classList.toggle("pending", pending);
  row.classList.toggle("has-conflict", Boolean(conflict));
  const box = row.querySelector(".toggle");
  box.checked = todo.done;
  row.querySelector(".title").textContent = todo.title;
  row.querySelector(".pending-mark").hidden = !pending;
  row.querySelector(".edit").setAttribute("aria-label", `Edit “${todo.title}”`);
  row.querySelector(".delete").setAttribute("aria-label", `Delete “${todo.title}”`);
  row.querySelector(".details").replaceChildren(...details(todo));
  const conflictEl = row.querySelector(".conflict");
  conflictEl.hidden = !conflict;
  conflictEl.replaceChildren(...(conflict ? conflictBox(todo, conflict, row.actions) : []));
}

function details(todo) {
  const parts = [];
  const day = dueDay(todo.due);
  if (day) {
    const overdue = !todo.done && day < localDay();
    parts.push(h("span", { class: `due${overdue ? " overdue" : ""}` },
      overdue ? `Overdue: ${showDay(day)}` : `Due ${showDay(day)}`));
  }
  for (const tag of todo.tags) parts.push(h("span", { class: "tag" }, `#${tag}`));
  if (todo.notes) parts.push(h("span", { class: "notes" }, todo.notes.split("\n")[0]));
  return parts;
}

const FIELD_NAMES = { title: "title", notes: "notes", due: "due date", tags: "tags", done: "done" };

function describe(field, value) {
  if (field === "due") return value ? showDay(dueDay(value)) : "none";
  if (field === "tags") return value.length ? value.join(", ") : "none";
  if (field === "done") return value ? "done" : "not done";
  return value === "" ? "empty" : `“${value}”`;
}

/** "Changed on another device": both versions of each field this edit sets, and the choice. */
function conflictBox(todo, entry, actions) {
  const theirs = entry.conflict.theirs;
  const lines = Object.keys(entry.fields).map((field) => h("li", {},
    `${FIELD_NAMES[field] ?? field}: yours ${describe(field, entry.fields[field])}, `
    + `theirs ${describe(field, theirs[field])}`));
  return [
    h("p", { class: "conflict-title" }, `“${todo.title}” was changed on another device meanwhile.`),
    h("ul", {}, ...lines),
    h("div", { class: "actions" },
      h("button", { type: "button", class: "primary", onclick: () => actions.resolve(entry.key, true) },
        "Keep mine"),
      h("button", { type: "button", onclick: () => actions.resolve(entry.key, false) },
        "Take theirs")),
  ];
}
