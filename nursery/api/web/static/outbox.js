// The outbox: the user's writes, kept on the device until the server has them.
//
// A write becomes an entry the moment the user makes it: it gets its Idempotency-Key then,
// is stored (IndexedDB, see store.js) and shows at once (`view` lays the entries over the
// server's state). Entries are sent one at a time, in the order they were made, whenever the
// server can be reached; each attempt of an entry carries the same key, so a replay after a
// lost answer, a reload, a crash or a reconnect is applied once (the server remembers keys
// for 24 hours). An entry leaves the outbox when the server has answered for good:
//
//   2xx           confirmed: the answer goes into the mirror (LiveTodos.applyLocal)
//   network, 408, 429, 5xx
//                 not now: the same entry again later (backoff), nothing lost
//   401           the device was signed out: stop (the page signs out)
//   409           the todo changed elsewhere since the user saw it (an edit carries if_rev).
//                 When the other change touched none of the fields this edit sets, the edit
//                 is simply re-based on the new revision; otherwise the entry becomes a
//                 conflict, shown to the user, who keeps theirs or takes the other version
//   404, 422, ... refused for good: the entry is dropped (the view rolls back) with a message
//
// Entries:
//   {seq, key, op: "create", id: "local-<key>", fields, at}   id: a stand-in until created
//   {seq, key, op: "update", id, fields, base?}  base: {rev, <field>: value the user saw},
//                                                  only for edits that must not overwrite
//   {seq, key, op: "delete", id, title}
// plus `uid` (never changes: how tabs tell entries apart), `sent` (tried at least once: its
// body must not change any more) and, for a conflict, `conflict: {theirs}`. Entries of one
// todo go out in order; a conflict holds back the later entries of its todo only.

import { newKey } from "./api.js";

const LOCAL_PREFIX = "local-";
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 30_000;
const RETRYABLE = (status) => status === 0 || status === 408 || status === 429 || status >= 500;

export const isLocalId = (id) => id.startsWith(LOCAL_PREFIX);

/** The user's view: the server's todos (`confirmed`, a Map) with the entries laid over. */
export function view(confirmed, entries) {
  const todos = new Map(confirmed);
  for (const entry of entries) {
    if (entry.conflict) continue; // shown apart until the user decides
    const todo = todos.get(entry.id);
    if (entry.op === "create") {
      todos.set(entry.id, {
        id: entry.id, notes: "", done: false, due: null, tags: [], ...entry.fields,
        rev: 0, created_at: entry.at, updated_at: entry.at,
      });
    } else if (entry.op === "update" && todo) {
      todos.set(entry.id, { ...todo, ...entry.fields });
    } else if (entry.op === "delete") {
      todos.delete(entry.id);
    }
  }
  return todos;
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

export class Outbox {
  /**
   * api: the Api (with the token); store: the LocalStore; mirror(): the LiveTodos now;
   * lockName: one sender per device across tabs (Web Locks).
   * Callbacks: onChange(here) entries changed (`here`: by this tab, not read from the store);
   * onRefused(message) an entry was dropped;
   * onConfirmed(todo|{id}) the server has it (rev known); onSignedOut().
   */
  constructor({ api, store, mirror, lockName, entries = [], ...callbacks }) {
    this.api = api;
    this.store = store;
    this.mirror = mirror;
    this.lockName = lockName;
    this.callbacks = callbacks;
    // A reload ends every "Undo" offer: held deletes go out.
    this.entries = entries.map((e) => ({ ...e, saved: Promise.resolve() }));
    this.dropped = new Set(); // uids, until the store has forgotten them too
    this.writes = new Set(); // store writes under way
    this.sending = false;
    this.again = false;
    this.stopped = false;
    this.failures = 0;
    this.timer = null;
    this.inFlight = null;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  get pending() {
    return this.entries.length;
  }

  pendingIds() {
    return new Set(this.entries.map((e) => e.id));
  }

  conflicts() {
    return this.entries.filter((e) => e.conflict);
  }

  /** Resolves once every change made so far is in the store (before telling other tabs,
   * or before the page goes away on purpose). */
  async stored() {
    await Promise.all([...this.writes]);
  }

  track(write) {
    this.writes.add(write);
    const forget = () => this.writes.delete(write);
    write.then(forget, forget);
    return write;
  }

  // -- the user's actions -------------------------------------------------------------------

  create(fields) {
    const key = newKey();
    return this.add({ key, op: "create", id: LOCAL_PREFIX + key, fields, at: new Date().toISOString() });
  }

  /** `base`: {rev, and each changed field's value as the user saw it} for an edit that must
   * not silently overwrite someone else's; none for a toggle (the last one wins). */
  update(id, fields, base = null) {
    return this.add({ key: newKey(), op: "update", id, fields, base });
  }

  remove(id, title) {
    return this.add({ key: newKey(), op: "delete", id, title });
  }

  /** Take back entries not sent yet (Undo while offline); returns the keys taken back. */
  takeBack(keys) {
    const unsent = this.entries.filter((e) => keys.includes(e.key) && !e.sent);
    for (const entry of unsent) this.drop(entry);
    if (unsent.length) this.changed();
    return new Set(unsent.map((e) => e.key));
  }

  /** The user settled a conflict: keep mine (send it over theirs) or take theirs. */
  resolve(key, keepMine) {
    const entry = this.entries.find((e) => e.key === key && e.conflict);
    if (!entry) return;
    if (keepMine) {
      this.rebase(entry, entry.conflict.theirs);
      delete entry.conflict;
      this.persist(entry);
    } else {
      this.drop(entry);
    }
    this.changed();
  }

  add(entry) {
    entry.uid = newKey();
    this.entries.push(entry);
    this.persist(entry);
    this.changed();
    return entry;
  }

  /** Store the entry. Puts are chained: the first one gives the entry its seq, which the
   * next ones need to replace it rather than add a copy. */
  persist(entry) {
    entry.saved = this.track((entry.saved ?? Promise.resolve())
      .then(() => this.store.putEntry(stripped(entry)))
      .then((seq) => { entry.seq = seq; }));
    return entry.saved;
  }

  drop(entry) {
    this.entries = this.entries.filter((e) => e !== entry);
    this.dropped.add(entry.uid);
    this.track(entry.saved.then(() => this.store.deleteEntry(entry.seq)))
      .then(() => this.dropped.delete(entry.uid));
  }

  changed() {
    this.callbacks.onChange?.();
    this.flush();
  }

  /** Take what is stored (another tab of this device may have added or sent entries):
   * stored entries in their order, ours as we have them, then ours still being stored. */
  async reload() {
    const stored = await this.store.outbox();
    const ours = new Map(this.entries.map((e) => [e.uid, e]));
    const storedUids = new Set(stored.map((e) => e.uid));
    this.entries = [
      ...stored.filter((e) => !this.dropped.has(e.uid))
        .map((e) => ours.get(e.uid) ?? { ...e, saved: Promise.resolve() }),
      ...this.entries.filter((e) => e.seq === undefined && !storedUids.has(e.uid)),
    ];
    this.callbacks.onChange?.(false);
  }

  // -- sending --------------------------------------------------------------------------------

  /** Send what can be sent; safe to call any time (one sender per device). */
  async flush() {
    // Offline, an attempt cannot succeed; not making one keeps entries unsent, so that
    // Undo can still take them back. The page flushes again when the network returns.
    if (this.stopped || navigator.onLine === false) return;
    if (this.sending) {
      this.again = true;
      return;
    }
    this.sending = true;
    clearTimeout(this.timer);
    try {
      do {
        this.again = false;
        await navigator.locks.request(this.lockName, () => this.sendAll());
      } while (this.again && !this.stopped);
    } finally {
      this.sending = false;
    }
  }

  /** The first entry that may go now: no conflict, nothing of its todo waiting before it. */
  next() {
    const waiting = new Set();
    for (const entry of this.entries) {
      const blocked = waiting.has(entry.id) || entry.conflict
        || (isLocalId(entry.id) && entry.op !== "create");
      if (!blocked) return entry;
      waiting.add(entry.id);
    }
    return null;
  }

  async sendAll() {
    await this.reload(); // we hold the lock: no other tab sends meanwhile
    let entry;
    while (!this.stopped && (entry = this.next())) {
      const outcome = await this.send(entry);
      if (outcome === "later") {
        this.failures++;
        const delay = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** (this.failures - 1));
        this.timer = setTimeout(() => this.flush(), delay * (0.5 + Math.random() / 2));
        return;
      }
      this.failures = 0;
      if (outcome === "stop") return;
    }
  }

  /** One attempt; "done", "later" or "stop". `inFlight` names it meanwhile: the page holds
   * back what it cannot yet tell apart from its own echo (see app.js). */
  async send(entry) {
    this.inFlight = entry;
    try {
      return await this.attempt(entry);
    } finally {
      this.inFlight = null;
      this.callbacks.onChange?.();
    }
  }

  async attempt(entry) {
    await entry.saved;
    if (!entry.sent) {
      entry.sent = true;
      await this.persist(entry);
    }
    try {
      if (entry.op === "create") {
        const { todo } = await this.api.request("POST", "/api/todos", entry.fields,
          { retry: false, key: entry.key });
        this.confirmed(entry, todo);
        this.renameLocal(entry.id, todo);
      } else if (entry.op === "update") {
        const body = entry.base ? { ...entry.fields, if_rev: entry.base.rev } : entry.fields;
        const { todo } = await this.api.request("PATCH", `/api/todos/${entry.id}`, body,
          { retry: false, key: entry.key });
        this.confirmed(entry, todo);
      } else {
        await this.api.request("DELETE", `/api/todos/${entry.id}`, undefined,
          { retry: false, key: entry.key });
        this.confirmed(entry, null);
      }
      return "done";
    } catch (error) {
      if (error.status === undefined) throw error; // a bug, not an answer
      return this.failed(entry, error);
    }
  }

  confirmed(entry, todo) {
    this.drop(entry);
    const mirror = this.mirror();
    if (todo) {
      // My next edits of this todo were made on top of this one: they build on its rev.
      // (After a toggle, which has no base, they keep theirs: a 409 then checks.)
      for (const later of this.entries) {
        if (later.id === todo.id && later.base && !later.sent && entry.base
            && later.base.rev === entry.base.rev) {
          later.base.rev = todo.rev;
          this.persist(later);
        }
      }
      this.callbacks.onConfirmed?.(todo);
      mirror?.applyLocal(todo);
    } else {
      this.callbacks.onConfirmed?.({ id: entry.id });
      mirror?.removeLocal(entry.id);
    }
    this.callbacks.onChange?.();
  }

  /** A created todo has its server id: the entries made for its stand-in follow it. */
  renameLocal(localId, todo) {
    for (const entry of this.entries) {
      if (entry.id !== localId) continue;
      entry.id = todo.id;
      if (entry.base) entry.base.rev = todo.rev;
      this.persist(entry);
    }
  }

  async failed(entry, error) {
    if (RETRYABLE(error.status)) return "later";
    if (error.status === 401) {
      this.stop();
      this.callbacks.onSignedOut?.();
      return "stop";
    }
    if (entry.op === "delete" && error.status === 404) { // gone already: what we wanted
      this.confirmed(entry, null);
      return "done";
    }
    if (entry.op === "update" && error.status === 409) return this.conflicted(entry);
    this.refuse(entry, error);
    return "done";
  }

  /** A 409: re-base the edit when the other change left its fields alone, else ask. */
  async conflicted(entry) {
    let theirs;
    try {
      ({ todo: theirs } = await this.api.get(`/api/todos/${entry.id}`));
    } catch (error) {
      if (error.status === 404) {
        this.refuse(entry, error);
        return "done";
      }
      return RETRYABLE(error.status) ? "later" : "stop";
    }
    this.mirror()?.applyLocal(theirs);
    const untouched = Object.keys(entry.fields).every((f) => same(theirs[f], entry.base[f]));
    if (untouched) {
      this.rebase(entry, theirs);
    } else {
      entry.conflict = { theirs };
    }
    this.persist(entry);
    this.callbacks.onChange?.();
    return "done";
  }

  /** Send `entry` again on top of `theirs`: a new request, so a new key. */
  rebase(entry, theirs) {
    const base = { rev: theirs.rev };
    for (const field of Object.keys(entry.fields)) base[field] = theirs[field];
    Object.assign(entry, { base, key: newKey(), sent: false });
  }

  /** Dropped for good: the view rolls back, and the user is told why. */
  refuse(entry, error) {
    const dropped = entry.op === "create"
      ? this.entries.filter((e) => e.id === entry.id) // nothing can follow a refused create
      : [entry];
    for (const e of dropped) this.drop(e);
    const title = entry.fields?.title ?? entry.title ?? this.mirror()?.todos.get(entry.id)?.title;
    const what = title ? `“${title}”` : "A todo";
    const details = Object.entries(error.fields).map(([f, m]) => `${f}: ${m}`).join("; ");
    const reason = error.status === 404 ? `${what} was deleted on another device`
      : `${what} could not be saved (${details || error.message})`;
    this.callbacks.onRefused?.(`${reason}. Your change was undone.`);
    this.callbacks.onChange?.();
  }
}

/** What is stored of an entry (not its in-memory promise). */
function stripped(entry) {
  const { saved, ...rest } = entry;
  return rest;
}
