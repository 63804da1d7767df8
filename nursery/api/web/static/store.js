// What the page keeps on this device, in IndexedDB: the mirror of the user's todos and the
// revision it reflects, the outbox of writes not yet confirmed by the server, and the last
// known list of devices. One database per user ("nursery-<user id>"), deleted at sign-out.
//
// Plain IndexedDB behind a few promises (no library: four object stores and simple keys do
// not need one). Transactions on the same stores run in the order they were created, so
// writes issued one after another land in that order even though nobody awaits them.

const SCHEMA_VERSION = 1;
const TODOS = "todos"; // key: the todo's id
const OUTBOX = "outbox"; // key: seq, given by IndexedDB in the order the user acted
const META = "meta"; // "rev", "sessions"

export function databaseName(userId) {
  return `nursery-${userId}`;
}

function done(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/** Run `work(stores)` in one transaction; resolves with its result once it is committed. */
function transact(db, names, mode, work) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(names, mode);
    const stores = Object.fromEntries(names.map((name) => [name, tx.objectStore(name)]));
    let result;
    Promise.resolve(work(stores)).then((value) => { result = value; }, reject);
    tx.oncomplete = () => resolve(result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("transaction aborted"));
  });
}

export class LocalStore {
  static async open(userId) {
    const request = indexedDB.open(databaseName(userId), SCHEMA_VERSION);
    request.onupgradeneeded = () => {
      const db = request.result;
      db.createObjectStore(TODOS, { keyPath: "id" });
      db.createObjectStore(OUTBOX, { keyPath: "seq", autoIncrement: true });
      db.createObjectStore(META);
    };
    return new LocalStore(await done(request));
  }

  static async destroy(userId) {
    await done(indexedDB.deleteDatabase(databaseName(userId)));
  }

  constructor(db) {
    this.db = db;
    // Another tab deleting the database (signing out) must not wait for this one.
    db.onversionchange = () => db.close();
  }

  close() {
    this.db.close();
  }

  /** Everything kept: {todos: [...], rev (null: none), outbox: [...] in seq order, sessions}. */
  load() {
    return transact(this.db, [TODOS, OUTBOX, META], "readonly", async (s) => {
      const [todos, outbox, rev, sessions] = await Promise.all([
        done(s[TODOS].getAll()), done(s[OUTBOX].getAll()),
        done(s[META].get("rev")), done(s[META].get("sessions")),
      ]);
      return { todos, outbox, rev: rev ?? null, sessions: sessions ?? [] };
    });
  }

  /** A fresh snapshot replaces the whole mirror. */
  replaceTodos(todos, rev) {
    return transact(this.db, [TODOS, META], "readwrite", (s) => {
      s[TODOS].clear();
      for (const todo of todos) s[TODOS].put(todo);
      s[META].put(rev, "rev");
    });
  }

  /** Some todos changed (`upserts`), some went (`deletes`: ids); `rev` when it advanced. */
  applyChanges({ upserts = [], deletes = [], rev = null }) {
    return transact(this.db, [TODOS, META], "readwrite", (s) => {
      for (const todo of upserts) s[TODOS].put(todo);
      for (const id of deletes) s[TODOS].delete(id);
      if (rev !== null) s[META].put(rev, "rev");
    });
  }

  outbox() {
    return transact(this.db, [OUTBOX], "readonly", (s) => done(s[OUTBOX].getAll()));
  }

  /** Adds an entry (without `seq`) or replaces one (with it); resolves with its seq. */
  putEntry(entry) {
    return transact(this.db, [OUTBOX], "readwrite", (s) => done(s[OUTBOX].put(entry)));
  }

  deleteEntry(seq) {
    return transact(this.db, [OUTBOX], "readwrite", (s) => { s[OUTBOX].delete(seq); });
  }

  saveSessions(sessions) {
    return transact(this.db, [META], "readwrite", (s) => { s[META].put(sessions, "sessions"); });
  }
}
