// The live mirror of one user's todos: a snapshot, then /ws from the snapshot's revision,
// reconnecting and resuming for as long as the user stays signed in (DESIGN.md, "WebSocket
// sync protocol").
//
// Start without a gap: GET /api/todos (every page; the FIRST page's `rev` is the revision the
// list reflects), then hello with since = that rev: the server sends every change after it,
// then live changes, in strictly increasing rev. `rev` is then the last change applied, and a
// reconnect resumes from it, so no change is lost or applied twice across reconnects. A
// `reset` (our rev is past the server's retention) drops the mirror's rev: the next
// connection starts over from a snapshot.
//
// Reconnecting: close code 4001 (revoked, signed out) ends the mirror for good; 1012 (the
// instance is restarting) and 4008 (we were too slow) reconnect at once, give or take a few
// hundred ms of jitter so that a restarted instance's clients do not all arrive together;
// anything else (network loss, refused connection) backs off exponentially with jitter.
// After a 1012 or 4008 the server is expected back within seconds (a rolling restart, or a
// sibling behind the load balancer), so for a minute the attempts stay 0.5–1 s apart instead.
// Server pings are answered; when the server has been silent too long we ping it, and a
// connection that does not answer is dropped and replaced.
//
// Local writes: the page applies the todo a REST write returns at once (`applyLocal`), so the
// list is right even while the socket is down; per-todo revisions keep a late, older change
// from overwriting it, and ids deleted here are not brought back by an older upsert.
//
// Kept on the device: the mirror may start from what the page stored (`todos`, `rev`); it
// then resumes /ws from that rev at once, with no snapshot (a `reset` still brings one).
// Every change to the mirror is reported to `onStore` so the page can keep it.

export const CONNECTING = "connecting";
export const LIVE = "live";
export const RECONNECTING = "reconnecting";
export const OFFLINE = "offline";
export const STOPPED = "stopped";

const CODE_RESTARTING = 1012;
const CODE_UNAUTHENTICATED = 4001;
const CODE_TOO_SLOW = 4008;

const PAGE_SIZE = 200;
const AT_ONCE_JITTER_MS = 300;
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 15_000;
const RESTART_WINDOW_MS = 60_000;
const RESTART_RETRY_MS = 1000;
const WELCOME_TIMEOUT_MS = 10_000; // from new WebSocket() to welcome
const QUIET_MS = 30_000; // the server pings every 20 s: this much silence is suspicious
const PONG_TIMEOUT_MS = 10_000;
const WATCH_EVERY_MS = 5_000;

/** The delay before reconnect attempt `failures` (1, 2, ...): between half and all of an
 * exponentially growing cap ("equal jitter"). */
export function backoff(failures) {
  const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.max(0, failures - 1));
  return cap / 2 + Math.random() * (cap / 2);
}

export class LiveTodos {
  /**
   * api: an Api with the token set. url: the /ws URL.
   * Callbacks: onTodos() the mirror changed; onState(state) connection state; onWelcome(frame);
   * onSession(frame); onPresence(onlineIds); onSignedOut(reason) — closed with 4001, final;
   * onStore({snapshot} | {upserts, deletes, rev}) — keep this; onRemoteChange(frame, before)
   * — a change frame was applied (`before`: the todo as it was, or undefined).
   * todos, rev: the mirror as stored on this device, if any.
   */
  constructor({ api, url, token, todos = [], rev = null, ...callbacks }) {
    this.api = api;
    this.url = url;
    this.token = token;
    this.callbacks = callbacks;
    this.todos = new Map(todos.map((t) => [t.id, t]));
    this.rev = rev;
    this.loaded = rev !== null;
    this.state = CONNECTING;
    this.instance = "";
    this.deleted = new Set();
    this.ws = null;
    this.welcomed = false;
    this.failures = 0;
    this.restartingSince = null; // when a 1012/4008 closed the last live connection
    this.generation = 0;
    this.busy = false; // loading a snapshot
    this.timer = null; // welcome timeout, or the wait before the next attempt
    this.watch = null;
    this.lastHeard = 0;
    this.pingSentAt = null;
    this.stopped = true;
    this.onOnline = () => this.reconnectNow();
    this.onOffline = () => { if (this.ws) this.drop(false); else this.setState(OFFLINE); };
    this.onVisible = () => { if (document.visibilityState === "visible") this.reconnectNow(); };
  }

  start() {
    this.stopped = false;
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOffline);
    document.addEventListener("visibilitychange", this.onVisible);
    this.watch = setInterval(() => this.checkQuiet(), WATCH_EVERY_MS);
    this.connect();
  }

  stop() {
    this.stopped = true;
    this.generation++;
    clearTimeout(this.timer);
    clearInterval(this.watch);
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOffline);
    document.removeEventListener("visibilitychange", this.onVisible);
    this.closeSocket();
    this.setState(STOPPED);
  }

  // -- local writes -----------------------------------------------------------------------

  applyLocal(todo) {
    if (this.upsert(todo)) {
      this.callbacks.onStore?.({ upserts: [todo] });
      this.callbacks.onTodos?.();
    }
  }

  removeLocal(id) {
    this.deleted.add(id);
    if (this.todos.delete(id)) {
      this.callbacks.onStore?.({ deletes: [id] });
      this.callbacks.onTodos?.();
    }
  }

  upsert(todo) {
    if (this.deleted.has(todo.id)) return false;
    const current = this.todos.get(todo.id);
    if (current && current.rev > todo.rev) return false;
    this.todos.set(todo.id, todo);
    return true;
  }

  // -- the connection ---------------------------------------------------------------------

  /** Connect now if we are waiting to (the network came back, the page became visible). */
  reconnectNow() {
    if (this.stopped || this.ws || this.busy) return;
    this.failures = 0;
    this.connect();
  }

  async connect() {
    clearTimeout(this.timer);
    if (this.stopped) return;
    const generation = ++this.generation;
    if (this.rev === null) {
      this.busy = true;
      try {
        await this.loadSnapshot();
      } catch (error) {
        if (generation !== this.generation) return;
        // 401: the Api has already signed us out; anything else: try again later.
        if (error.status !== 401) this.retry(false);
        return;
      } finally {
        this.busy = false;
      }
      if (generation !== this.generation) return;
    }
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.retry(false); // a malformed URL or a policy refusal: nothing to wait for
      return;
    }
    this.ws = ws;
    this.welcomed = false;
    this.lastHeard = Date.now();
    this.pingSentAt = null;
    this.timer = setTimeout(() => this.drop(false), WELCOME_TIMEOUT_MS);
    ws.onopen = () => ws.send(JSON.stringify({ type: "hello", token: this.token, since: this.rev }));
    ws.onmessage = (event) => this.receive(ws, event.data);
    ws.onclose = (event) => this.closed(ws, event.code, event.reason);
  }

  async loadSnapshot() {
    let page = await this.api.get(`/api/todos?limit=${PAGE_SIZE}`);
    const rev = page.rev;
    const items = [...page.items];
    while (page.next_cursor) {
      const cursor = encodeURIComponent(page.next_cursor);
      page = await this.api.get(`/api/todos?limit=${PAGE_SIZE}&cursor=${cursor}`);
      items.push(...page.items);
    }
    this.todos = new Map(items.filter((t) => !this.deleted.has(t.id)).map((t) => [t.id, t]));
    this.rev = rev;
    this.loaded = true;
    this.callbacks.onStore?.({ snapshot: [...this.todos.values()], rev });
    this.callbacks.onTodos?.();
  }

  receive(ws, data) {
    if (ws !== this.ws) return;
    this.lastHeard = Date.now();
    this.pingSentAt = null;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    switch (frame.type) {
      case "welcome":
        clearTimeout(this.timer);
        this.welcomed = true;
        this.failures = 0;
        this.restartingSince = null;
        this.instance = frame.instance;
        this.setState(LIVE);
        this.callbacks.onWelcome?.(frame);
        break;
      case "change":
        this.applyChange(frame);
        break;
      case "reset": // our rev is too old: start over from a snapshot
        this.rev = null;
        this.drop(true);
        break;
      case "session":
        this.callbacks.onSession?.(frame);
        break;
      case "presence":
        this.callbacks.onPresence?.(frame.online);
        break;
      case "ping":
        ws.send(JSON.stringify({ type: "pong" }));
        break;
    }
  }

  applyChange(frame) {
    if (!Number.isInteger(frame.rev) || frame.rev <= this.rev) return; // already applied
    const id = frame.op === "upsert" ? frame.todo.id : frame.id;
    const before = this.todos.get(id);
    const stored = { upserts: [], deletes: [], rev: frame.rev };
    if (frame.op === "upsert") {
      if (this.upsert(frame.todo)) stored.upserts.push(frame.todo);
    } else if (frame.op === "delete") {
      this.todos.delete(frame.id);
      this.deleted.add(frame.id);
      stored.deletes.push(frame.id);
    }
    this.rev = frame.rev;
    this.callbacks.onStore?.(stored);
    this.callbacks.onRemoteChange?.(frame, before);
    this.callbacks.onTodos?.();
  }

  closed(ws, code, reason) {
    if (ws !== this.ws) return;
    this.ws = null;
    if (this.stopped) return;
    if (code === CODE_UNAUTHENTICATED) {
      this.stop();
      this.callbacks.onSignedOut?.(reason);
      return;
    }
    const restarting = code === CODE_RESTARTING || code === CODE_TOO_SLOW;
    if (restarting) this.restartingSince ??= Date.now();
    this.retry(restarting);
  }

  /** Abandon the current socket (no answer, or a reset) and schedule the next attempt. */
  drop(atOnce) {
    this.closeSocket();
    if (!this.stopped) this.retry(atOnce);
  }

  closeSocket() {
    const ws = this.ws;
    this.ws = null;
    clearTimeout(this.timer);
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    try {
      ws.close(1000);
    } catch {
      // already closing
    }
  }

  /** Schedule the next attempt: at once (with a little jitter) only when the server asked
   * for it and the last attempt did not fail already; soon while a restart is expected to
   * end; else with exponential backoff. */
  retry(atOnce) {
    clearTimeout(this.timer);
    const immediate = atOnce && this.failures === 0;
    const restarting = this.restartingSince !== null
      && Date.now() - this.restartingSince < RESTART_WINDOW_MS;
    this.failures++;
    const delay = immediate ? Math.random() * AT_ONCE_JITTER_MS
      : restarting ? (RESTART_RETRY_MS / 2) * (1 + Math.random())
      : backoff(this.failures);
    this.setState(navigator.onLine === false ? OFFLINE : RECONNECTING);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  checkQuiet() {
    const ws = this.ws;
    if (!ws || !this.welcomed) return;
    const now = Date.now();
    if (this.pingSentAt !== null) {
      if (now - this.pingSentAt > PONG_TIMEOUT_MS) this.drop(false);
    } else if (now - this.lastHeard > QUIET_MS) {
      this.pingSentAt = now;
      ws.send(JSON.stringify({ type: "ping" }));
    }
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.callbacks.onState?.(state);
  }
}
