// One assistant reply on screen, and following its stream to the end.
//
// Because the log is the source of truth, a reply is never generated twice for a reader: a
// reload or a dropped connection resumes the same response's stream after the last event this
// tab had (its SSE id, kept in sessionStorage with the text so far), so nothing is repeated or
// lost; a tab that has nothing saved (a second tab) reads the stream from its first event.

import { events } from "./api.js";
import { renderMarkdown } from "./markdown.js";

const RENDER_EVERY_MS = 30; // at most one Markdown render per this while tokens pour in
const RETRY_MAX_MS = 10_000;

export class ReplyView {
  constructor(responseId) {
    this.responseId = responseId;
    this.text = "";
    this.element = document.createElement("div");
    this.element.className = "turn assistant";
    this.element.dataset.id = responseId;
    this.element.dataset.state = "streaming";
    this.body = this.element.appendChild(document.createElement("div"));
    this.body.className = "body markdown";
    this.footer = this.element.appendChild(document.createElement("div"));
    this.footer.className = "meta";
    this.renderTimer = 0;
  }

  get state() {
    return this.element.dataset.state;
  }

  setText(text) {
    this.text = text;
    this.scheduleRender();
  }

  append(text) {
    this.setText(this.text + text);
  }

  /** Show how the reply ended, from its final SSE event or from history. */
  end(outcome, detail = "") {
    this.element.dataset.state = outcome;
    this.render();
    if (outcome === "cancelled") this.note("Stopped.");
    if (outcome === "failed") this.notice(`The reply failed: ${detail || "unknown error"}. Regenerate to try again.`);
    if (outcome === "blocked") {
      this.body.replaceChildren();
      this.notice(`Blocked by moderation: ${detail}`);
    }
  }

  scheduleRender() {
    if (!this.renderTimer) this.renderTimer = setTimeout(() => this.render(), RENDER_EVERY_MS);
  }

  render() {
    clearTimeout(this.renderTimer);
    this.renderTimer = 0;
    this.body.innerHTML = renderMarkdown(this.text); // the one place the page writes HTML: see markdown.js
  }

  note(text) {
    const note = this.footer.appendChild(document.createElement("span"));
    note.className = "note";
    note.textContent = text;
  }

  notice(text) {
    const notice = this.body.appendChild(document.createElement("p"));
    notice.className = `notice ${this.state}`;
    notice.textContent = text;
  }
}

/** How a stream's last event reads as a reply's outcome. */
function outcomeOf(event) {
  if (event.name === "done") return event.data.outcome; // completed or cancelled
  return event.name === "error" ? "failed" : "blocked";
}

/**
 * Stream the reply into the view until it ends, resuming where this tab was; resolves with the
 * outcome. `stream`: the reply's events already coming in (the answer to the message's POST);
 * if it breaks off, the reply's own stream takes over from the last event it gave.
 */
export async function follow(view, signal, stream = null) {
  const saved = progress.load(view.responseId);
  if (saved) view.setText(saved.text);
  let after = saved?.lastId;
  for (let attempt = 0; ; attempt += 1) {
    try {
      const query = after === undefined ? "" : `?starting_after=${after}`;
      const source = stream ?? events(`/v1/responses/${view.responseId}/events${query}`, signal);
      stream = null;
      for await (const event of source) {
        after = event.id;
        if (event.name === "token") view.append(event.data.text);
        else if (event.name === "restart") view.setText(""); // a retried generation: its text starts over
        else {
          progress.clear(view.responseId);
          view.end(outcomeOf(event), event.data.detail);
          return view.state;
        }
        progress.save(view.responseId, view.text, after);
      }
    } catch (error) {
      if (signal.aborted || (error.status >= 400 && error.status < 500)) throw error;
    }
    await pause(Math.min(250 * 2 ** attempt, RETRY_MAX_MS), signal); // the stream broke off: reconnect
  }
}

function pause(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });
}

/** Where each reply this tab reads had got to: text so far and the last SSE id. */
const progress = {
  key: (responseId) => `steno-reply:${responseId}`,
  load(responseId) {
    const saved = sessionStorage.getItem(this.key(responseId));
    return saved ? JSON.parse(saved) : null;
  },
  save(responseId, text, lastId) {
    sessionStorage.setItem(this.key(responseId), JSON.stringify({ text, lastId }));
  },
  clear(responseId) {
    sessionStorage.removeItem(this.key(responseId));
  },
};
