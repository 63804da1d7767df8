// The REST API (DESIGN.md "Public API (v1)"): JSON in and out, the bearer token, the error
// shape {"error": {"code", "message", "details"}}, and retries that are safe to make.
//
// Reads are retried on a network error, 502, 503 and 504 (what a client sees while an
// instance restarts); writes too, because each carries one Idempotency-Key for all its
// attempts: a retry of a write that did happen returns the first result and changes nothing.

const TIMEOUT_MS = 10_000;
const RETRY_DELAYS_MS = [250, 1000, 2500];
const RETRY_AFTER_MAX_MS = 5000;
const RETRYABLE = new Set([502, 503, 504]);

export class ApiError extends Error {
  /** status 0: the server could not be reached. */
  constructor(status, code, message, details = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }

  /** Per-field messages from `details` ([{field, message}]), keyed by field. */
  get fields() {
    const out = {};
    if (Array.isArray(this.details)) {
      for (const d of this.details) if (d && d.field) out[d.field] = d.message;
    }
    return out;
  }
}

/** An idempotency key; crypto.randomUUID needs a secure context, getRandomValues does not. */
export function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Api {
  /** onUnauthorized(message): a request made with the token got 401 (revoked, expired). */
  constructor({ onUnauthorized = () => {} } = {}) {
    this.token = null;
    this.onUnauthorized = onUnauthorized;
  }

  /** `retry: false` for writes the server does not deduplicate (logging in twice would
   * leave a second session behind), and for writes whose caller retries them itself (the
   * outbox). `key`: the write's Idempotency-Key, when the caller keeps it across attempts. */
  async request(method, path, body, { retry = true, key = newKey() } = {}) {
    const retries = retry ? RETRY_DELAYS_MS.length : 0;
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET") headers["Idempotency-Key"] = key;
    const token = this.token;
    if (token) headers.Authorization = `Bearer ${token}`;
    const init = { method, headers, body: body === undefined ? undefined : JSON.stringify(body) };

    for (let attempt = 0; ; attempt++) {
      let response;
      try {
        response = await fetch(path, { ...init, signal: AbortSignal.timeout(TIMEOUT_MS) });
      } catch {
        if (attempt < retries) {
          await sleep(RETRY_DELAYS_MS[attempt]);
          continue;
        }
        throw new ApiError(0, "unreachable", "The server cannot be reached. Try again.");
      }
      if (RETRYABLE.has(response.status) && attempt < retries) {
        const after = Number(response.headers.get("Retry-After")) * 1000;
        await sleep(Math.min(RETRY_AFTER_MAX_MS, after > 0 ? after : RETRY_DELAYS_MS[attempt]));
        continue;
      }
      if (response.status === 204) return null;
      const data = await response.json().catch(() => null);
      if (response.ok) return data;
      const error = (data && data.error) || {};
      const failure = new ApiError(
        response.status,
        error.code || "http_error",
        error.message || `The server answered ${response.status}.`,
        error.details ?? null,
      );
      if (response.status === 401 && token && token === this.token) {
        this.onUnauthorized(failure.message);
      }
      throw failure;
    }
  }

  get(path) { return this.request("GET", path); }
  post(path, body, options) { return this.request("POST", path, body, options); }
  patch(path, body) { return this.request("PATCH", path, body); }
  delete(path) { return this.request("DELETE", path); }
}
