// The dashboard's only way to the server: `fetch` with the key in `X-API-Key`, the envelope
// unwrapped, and every failure turned into an ApiError carrying the server's message and request id.

const KEY_STORAGE = "faultline.apiKey";
const REQUEST_TIMEOUT_MS = 15000;

export function getKey() {
  return localStorage.getItem(KEY_STORAGE);
}

export function setKey(key) {
  localStorage.setItem(KEY_STORAGE, key);
}

export function clearKey() {
  localStorage.removeItem(KEY_STORAGE);
}

export class ApiError extends Error {
  /**
   * kind: "unreachable" (no answer), "unauthorized" (key refused), "forbidden" (key lacks a
   * permission), "throttled" (429), "http" (any other error answer).
   */
  constructor(message, { kind = "http", status = 0, code = null, requestId = null, details = null } = {}) {
    super(message);
    this.kind = kind;
    this.status = status;
    this.code = code;
    this.requestId = requestId;
    this.details = details;
  }
}

/** Listeners told about every request's outcome: ({ ok, error }) — drives the connection status. */
const listeners = new Set();
export function onOutcome(fn) {
  listeners.add(fn);
}
function report(outcome) {
  for (const fn of listeners) fn(outcome);
}

const KIND_BY_STATUS = { 401: "unauthorized", 403: "forbidden", 429: "throttled" };

/**
 * Calls the API and answers the envelope's `data` (`null` for 204). `key` overrides the stored key
 * (used to check a key before keeping it).
 */
export async function api(path, { method = "GET", body, key = getKey() } = {}) {
  const headers = { Accept: "application/json" };
  // A request that hangs would stall the auto-refresh: give up after a while and say so.
  const timeout = new AbortController();
  const timer = setTimeout(() => timeout.abort(), REQUEST_TIMEOUT_MS);
  if (key) headers["X-API-Key"] = key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      // Revalidate with the server's ETag: unchanged data costs a 304, never a stale page.
      cache: "no-cache",
      credentials: "omit",
      signal: timeout.signal,
    });
  } catch (e) {
    clearTimeout(timer);
    const why = e.name === "AbortError" ? `no answer within ${REQUEST_TIMEOUT_MS / 1000} s` : e.message;
    const error = new ApiError(`The API is unreachable (${why}).`, { kind: "unreachable" });
    report({ ok: false, error });
    throw error;
  }
  clearTimeout(timer);
  if (res.status === 204) {
    report({ ok: true });
    return null;
  }
  let payload = null;
  try {
    payload = await res.json();
  } catch {
    payload = null;
  }
  if (!res.ok || !payload || payload.status === "error") {
    const error = new ApiError(
      (payload && payload.error) || `The API answered ${res.status} ${res.statusText}`.trim(),
      {
        kind: KIND_BY_STATUS[res.status] || (res.status >= 502 && !payload ? "unreachable" : "http"),
        status: res.status,
        code: payload && payload.code,
        requestId: (payload && payload.request_id) || res.headers.get("x-request-id"),
        details: payload && payload.details,
      },
    );
    report({ ok: false, error });
    throw error;
  }
  report({ ok: true });
  return payload.data;
}
