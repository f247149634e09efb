// The page's one door to steno: the signed-in session, JSON calls, and Server-Sent Events read
// with fetch (EventSource cannot send an Authorization header).

const TOKEN_KEY = "steno-token";

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

export const session = {
  get token() {
    return localStorage.getItem(TOKEN_KEY);
  },
  set token(value) {
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
  },
  /** The user the token names (its `sub` claim); steno checks the signature, the page only shows it. */
  get user() {
    try {
      const payload = this.token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(payload)).sub;
    } catch {
      return null;
    }
  },
};

/** Sign in with a local username: steno answers with the JWT every endpoint checks. */
export async function signIn(username) {
  const { token } = await call("/v1/auth/login", { method: "POST", body: { username }, anonymous: true });
  session.token = token;
}

/** A JSON call; throws ApiError with steno's own explanation (its `detail`) when refused. */
export async function call(path, { method = "GET", body, signal, anonymous = false, extraHeaders = {} } = {}) {
  const response = await fetch(path, {
    method,
    signal,
    headers: { ...headers(body !== undefined, anonymous), ...extraHeaders },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  await check(response, anonymous);
  return response.status === 204 ? null : response.json();
}

/**
 * The events of an SSE stream as {name, id, data}, until the server closes it. steno ends its
 * lines with CRLF, and a comment line (a heartbeat) carries nothing. With a body, the stream is
 * the answer to a POST of it (a message and its reply, in one request).
 */
export async function* events(path, signal, { method = "GET", body, extraHeaders = {} } = {}) {
  const response = await fetch(path, {
    method,
    signal,
    headers: { ...headers(body !== undefined), ...extraHeaders, Accept: "text/event-stream" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  await check(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = {};
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const lines = buffer.split("\n");
    buffer = lines.pop();
    for (const raw of lines) {
      const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
      if (line === "") {
        if (event.data !== undefined) yield { name: event.name ?? "message", id: event.id, data: JSON.parse(event.data) };
        event = {};
      } else if (!line.startsWith(":")) {
        const cut = line.indexOf(":");
        const field = cut < 0 ? line : line.slice(0, cut);
        const text = cut < 0 ? "" : line.slice(cut + 1).replace(/^ /, "");
        if (field === "data") event.data = event.data === undefined ? text : `${event.data}\n${text}`;
        else if (field === "event") event.name = text;
        else if (field === "id") event.id = text;
      }
    }
  }
}

function headers(json, anonymous = false) {
  const result = anonymous ? {} : { Authorization: `Bearer ${session.token}` };
  if (json) result["Content-Type"] = "application/json";
  return result;
}

async function check(response, anonymous = false) {
  if (response.ok) return;
  const detail = await explanation(response);
  if (response.status === 401 && !anonymous) {
    session.token = null;
    window.dispatchEvent(new CustomEvent("steno:signed-out", { detail }));
  }
  throw new ApiError(response.status, detail);
}

async function explanation(response) {
  const body = await response.json().catch(() => ({}));
  const detail = body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg.replace(/^Value error, /, "")).join("; ");
  return `${response.status} ${response.statusText}`;
}
