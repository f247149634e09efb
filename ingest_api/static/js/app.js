// The chat page: sign-in, then the sidebar and the open conversation. The address says which
// conversation is open (#/c/<id>), so a reload reopens it and a link opens it in another tab.

import { ApiError, session, signIn } from "./api.js";
import { Chat } from "./chat.js";
import { Sidebar } from "./sidebar.js";

const $ = (id) => document.getElementById(id);

const chat = new Chat({
  onTitle: (title) => ($("title").textContent = title),
  onConversationCreated: (id) => {
    history.replaceState(null, "", `#/c/${id}`);
    sidebar.highlight(id);
    sidebar.refresh().catch(showError);
  },
});

const sidebar = new Sidebar({
  onOpen: (id) => (location.hash = id ? `#/c/${id}` : "#/new"),
  onRenamed: (id, title) => id === chat.id && ($("title").textContent = title),
  onDeleted: (id) => id === chat.id && (location.hash = "#/new"),
  onError: showError,
});

function showError(error) {
  chat.showNotice(error instanceof Error ? error.message : String(error));
}

function conversationInAddress() {
  return /^#\/c\/([\w-]+)$/.exec(location.hash)?.[1] ?? null;
}

async function openFromAddress() {
  const id = conversationInAddress();
  if (id === chat.id && id !== null) return;
  sidebar.highlight(id);
  try {
    await chat.open(id, (id && sidebar.titleOf(id)) || "New chat");
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) { // deleted, or not yours
      history.replaceState(null, "", "#/new");
      await chat.open(null);
    }
    showError(error);
  }
}

async function showApp() {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("who").textContent = session.user;
  await Promise.all([chat.loadModels(), sidebar.refresh()]);
  await openFromAddress();
  $("content").focus();
}

function showSignIn(message = "") {
  chat.open(null);
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("username").focus();
}

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await signIn($("username").value.trim());
    await showApp();
  } catch (error) {
    $("signin-error").textContent = error.message;
  }
});

$("sign-out").addEventListener("click", () => {
  session.token = null;
  showSignIn();
});

window.addEventListener("steno:signed-out", (event) => showSignIn(`Signed out: ${event.detail}`));
window.addEventListener("hashchange", openFromAddress);

if (session.token) showApp().catch(showError);
else showSignIn();
