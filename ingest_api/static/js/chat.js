// The open conversation: its turns, sending a message, Stop, Regenerate, and replies that
// another tab asked for (the conversation's live feed says when one begins).

import { call, events } from "./api.js";
import { ReplyView, follow } from "./reply.js";

const TITLE_CHARS = 60; // a new conversation is titled with the start of its first message
const REGENERABLE = new Set(["completed", "cancelled", "failed"]);
const HISTORY_LAG_MS = 3200; // the longest wait between readings of a history that lags the feed (6.35 s in all)

export class Chat {
  constructor({ onConversationCreated, onTitle }) {
    this.log = document.getElementById("log");
    this.notice = document.getElementById("notice");
    this.content = document.getElementById("content");
    this.model = document.getElementById("model");
    this.send = document.getElementById("send");
    this.stop = document.getElementById("stop");
    this.onConversationCreated = onConversationCreated;
    this.onTitle = onTitle;
    this.id = null;
    this.replies = new Map(); // response id -> ReplyView on screen
    this.generating = null; // the conversation's reply in progress, if any
    this.sending = false;
    this.draft = null; // {content, key}: the message being sent, until steno says it has it
    this.abort = new AbortController();

    document.getElementById("composer").addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.content.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.submit();
      }
    });
    this.stop.addEventListener("click", () => this.guard(this.cancel()));
    this.keepNewestInView();
  }

  /** Scroll along as turns arrive and replies grow, unless the reader has scrolled back up. */
  keepNewestInView() {
    let atBottom = true;
    this.log.addEventListener("scroll", () => {
      atBottom = this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 40;
    });
    new MutationObserver(() => atBottom && (this.log.scrollTop = this.log.scrollHeight))
      .observe(this.log, { childList: true, subtree: true });
  }

  async loadModels() {
    const { data } = await call("/v1/models");
    this.model.replaceChildren(...data.map(({ id }) => new Option(id, id)));
    this.model.value = data.some(({ id }) => id === "smollm2") ? "smollm2" : data[0]?.id;
  }

  /** Show a conversation (null: a new, empty one) and follow what happens in it. */
  async open(id, title = "New chat") {
    this.abort.abort();
    this.abort = new AbortController();
    this.id = id;
    this.replies.clear();
    this.log.replaceChildren();
    this.setGenerating(null);
    this.showNotice("");
    this.onTitle(title);
    if (id === null) return;
    await new Promise((ready, failed) => this.watch(this.abort.signal, ready).catch(failed));
  }

  /** Bring the log in line with the history: new turns appended, replaced replies removed. */
  async sync() {
    const id = this.id;
    const turns = await call(`/v1/conversations/${id}/messages`, { signal: this.abort.signal });
    if (id !== this.id) return;
    const current = new Set(turns.map((turn) => turn.id));
    for (const element of this.log.querySelectorAll(".assistant:not([data-state=streaming])")) {
      if (!current.has(element.dataset.id)) element.remove(); // regenerated, in another tab
    }
    for (const turn of turns) this.log.append(this.existing(turn.id) ?? this.turnElement(turn));
    this.refreshControls();
  }

  existing(id) {
    return [...this.log.children].find((element) => element.dataset.id === id) ?? null;
  }

  turnElement(turn) {
    if (turn.role === "user") return userTurn(turn.content, turn.id, turn.status);
    const view = new ReplyView(turn.id);
    if (turn.status === "pending") this.follow(view);
    else {
      view.setText(turn.status === "blocked" ? "" : turn.content);
      view.end(turn.status, turn.status === "blocked" ? turn.content : turn.detail);
      this.replies.set(turn.id, view);
    }
    return view.element;
  }

  async submit() {
    const content = this.content.value;
    if (!content.trim() || this.generating || this.sending) return;
    this.sending = true;
    this.showNotice("");
    // Sending the same text again after an error (steno's 503 "it may not be stored", a lost
    // answer) goes under the same key: steno answers with the conversation and the message it
    // has, never a second one.
    if (this.draft?.content !== content) this.draft = { content, key: idempotencyKey() };
    const once = { "Idempotency-Key": this.draft.key };
    try {
      if (this.id === null) {
        const title = content.trim().split("\n")[0].slice(0, TITLE_CHARS);
        const { id } = await call("/v1/conversations", { method: "POST", body: { title }, extraHeaders: once });
        this.id = id;
        this.onTitle(title);
        this.onConversationCreated(id);
        this.watch(this.abort.signal);
      }
      const mine = this.log.appendChild(userTurn(content, "", "sent"));
      // The reply streams in the answer to the POST itself: its first event says the message is in.
      const reply = events(`/v1/conversations/${this.id}/messages`, this.abort.signal, {
        method: "POST", body: { content, model: this.model.value },
        extraHeaders: once,
      });
      const { value: accepted } = await reply.next().catch((error) => {
        mine.remove();
        throw error;
      });
      if (accepted?.name !== "accepted") throw new Error("steno did not say whether it took the message: reload to see");
      this.draft = null;
      this.content.value = "";
      if (this.replies.has(accepted.data.response_id)) {
        // Sent again after a lost answer, and the feed has shown the message and its reply already.
        mine.remove();
        await reply.return();
        return;
      }
      mine.dataset.id = accepted.data.message_id;
      this.startReply(accepted.data.response_id, reply);
    } catch (error) {
      this.showNotice(error.message);
    } finally {
      this.sending = false;
    }
  }

  async regenerate(view) {
    // Sending: the feed may announce the new reply before this answer arrives; it is shown once, here.
    this.sending = true;
    try {
      const accepted = await call(`/v1/responses/${view.responseId}/regenerate`, {
        method: "POST", body: { model: this.model.value },
      });
      view.element.remove();
      this.replies.delete(view.responseId);
      this.startReply(accepted.response_id);
    } finally {
      this.sending = false;
    }
  }

  async cancel() {
    if (this.generating) await call(`/v1/responses/${this.generating}/cancel`, { method: "POST" });
  }

  /** Show a new reply and follow it; `stream`: its events already coming in, if any. */
  startReply(responseId, stream = null) {
    const view = new ReplyView(responseId);
    this.log.append(view.element);
    this.follow(view, stream);
  }

  /** Follow a reply to its end; while it streams it is the conversation's one in progress. */
  follow(view, stream = null) {
    this.replies.set(view.responseId, view);
    this.setGenerating(view.responseId);
    const signal = this.abort.signal;
    follow(view, signal, stream)
      .catch((error) => signal.aborted || view.end("failed", error.message))
      .finally(() => {
        if (!signal.aborted && this.generating === view.responseId) this.setGenerating(null);
      });
  }

  /**
   * The conversation's live feed: a reply another tab asked for shows here too, as it streams.
   * On each (re)connect the history is read once the feed is `ready` (watching), so a reply that
   * begins meanwhile is announced, never missed; `synced` is called after the first reading.
   */
  async watch(signal, synced = () => {}) {
    const id = this.id;
    while (!signal.aborted) {
      try {
        for await (const event of events(`/v1/conversations/${id}/events`, signal)) {
          if (event.name === "ready") {
            if (!this.sending) await this.sync(); // a tab sending its first message has nothing to catch up
            synced();
          } else if (!this.sending && !this.replies.has(event.data.response_id)) await this.syncUntilHeld(event.data.response_id);
        }
      } catch (error) {
        if (signal.aborted) return;
        if (error.status === 404) throw error;
      }
      await new Promise((resolve) => setTimeout(resolve, 1000)); // then reconnect
    }
  }

  /**
   * The feed announces a reply from the token stream, the history view has it once the projection
   * applied its message: two processes, so the announcement can come first. Read the history again,
   * a little later each time, until it holds the reply (then followed from its first token on).
   */
  async syncUntilHeld(responseId) {
    for (let wait = 50; wait <= HISTORY_LAG_MS; wait *= 2) {
      await this.sync();
      if (this.replies.has(responseId) || this.abort.signal.aborted) return;
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
    await this.sync();
  }

  setGenerating(responseId) {
    this.generating = responseId;
    this.stop.hidden = responseId === null;
    this.send.disabled = responseId !== null;
    this.refreshControls();
  }

  /** Regenerate is offered on the last reply alone, once it has ended (and was not blocked). */
  refreshControls() {
    for (const button of this.log.querySelectorAll("button.regenerate")) button.remove();
    const last = this.log.lastElementChild;
    const view = last && this.replies.get(last.dataset.id);
    if (!view || this.generating || !REGENERABLE.has(view.state)) return;
    const button = view.footer.appendChild(document.createElement("button"));
    button.type = "button";
    button.className = "regenerate";
    button.textContent = "Regenerate";
    button.addEventListener("click", () => this.guard(this.regenerate(view)));
  }

  showNotice(text) {
    this.notice.textContent = text;
    this.notice.hidden = !text;
  }

  guard(promise) {
    promise.catch((error) => this.showNotice(error.message));
  }
}

function userTurn(content, id, status) {
  const element = document.createElement("div");
  element.className = `turn user ${status}`;
  element.dataset.id = id;
  const body = element.appendChild(document.createElement("div"));
  body.className = "body";
  body.textContent = content; // the user's own text, shown as written: never parsed as HTML
  return element;
}

/** A new idempotency key: 128 random bits (crypto.randomUUID needs a secure context; this does not). */
function idempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}
