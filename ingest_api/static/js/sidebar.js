// The signed-in user's conversations, newest first: open one, start a new one, rename, delete.

import { call } from "./api.js";

const CONFIRM_MS = 3000; // a delete asks "Delete?" once and waits this long for the second click

export class Sidebar {
  constructor({ onOpen, onRenamed, onDeleted, onError }) {
    this.list = document.getElementById("conversations");
    this.onRenamed = onRenamed;
    this.onDeleted = onDeleted;
    this.onError = onError;
    this.current = null;
    this.refreshes = 0;
    document.getElementById("new-chat").addEventListener("click", () => onOpen(null));
  }

  async refresh() {
    // Listings can come back out of order (a slow first one on a cold stack): only the latest asked shows.
    const asked = ++this.refreshes;
    const conversations = await call("/v1/conversations");
    if (asked !== this.refreshes) return;
    this.list.replaceChildren(...conversations.map((conversation) => this.item(conversation)));
    this.highlight(this.current);
  }

  highlight(id) {
    this.current = id;
    for (const item of this.list.children) item.classList.toggle("current", item.dataset.id === id);
  }

  titleOf(id) {
    return this.itemOf(id)?.querySelector(".open").textContent ?? null;
  }

  itemOf(id) {
    return [...this.list.children].find((item) => item.dataset.id === id);
  }

  item({ id, title }) {
    const item = document.createElement("li");
    item.dataset.id = id;
    const open = item.appendChild(document.createElement("a"));
    open.className = "open";
    open.href = `#/c/${id}`;
    open.textContent = title || "Untitled";
    const rename = button(item, "rename", "Rename", "✎");
    const remove = button(item, "delete", "Delete", "×");
    rename.addEventListener("click", () => this.startRename(item, open));
    remove.addEventListener("click", () => this.confirmDelete(item, remove));
    return item;
  }

  /** The title becomes a text field: Enter saves, Escape (or leaving it) keeps the old one. */
  startRename(item, open) {
    const input = document.createElement("input");
    input.className = "title-input";
    input.value = open.textContent;
    input.maxLength = 200;
    input.setAttribute("aria-label", "New title");
    let finished = false;
    const finish = async (save) => {
      if (finished) return; // putting the title back blurs the field: that must not finish again
      finished = true;
      input.replaceWith(open);
      const title = input.value.trim();
      if (!save || !title || title === open.textContent) return;
      try {
        await call(`/v1/conversations/${item.dataset.id}`, { method: "PATCH", body: { title } });
        open.textContent = title;
        this.onRenamed(item.dataset.id, title);
      } catch (error) {
        this.onError(error.message);
      }
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") finish(true);
      if (event.key === "Escape") finish(false);
    });
    input.addEventListener("blur", () => finish(false));
    open.replaceWith(input);
    input.focus();
    input.select();
  }

  async confirmDelete(item, remove) {
    if (!remove.classList.contains("confirming")) {
      remove.classList.add("confirming");
      remove.textContent = "Delete?";
      setTimeout(() => {
        remove.classList.remove("confirming");
        remove.textContent = "×";
      }, CONFIRM_MS);
      return;
    }
    try {
      await call(`/v1/conversations/${item.dataset.id}`, { method: "DELETE" });
      item.remove();
      this.onDeleted(item.dataset.id);
    } catch (error) {
      this.onError(error.message);
    }
  }
}

function button(parent, className, label, text) {
  const element = parent.appendChild(document.createElement("button"));
  element.type = "button";
  element.className = className;
  element.title = label;
  element.setAttribute("aria-label", label);
  element.textContent = text;
  return element;
}
