// The desk's entry point: signing in (a pasted key or a sign-in link), signing out, and handing the
// signed-in session to the Desk. A key the API stops accepting (revoked, expired) brings the page back
// here with a message.

import { Api, ApiError } from "./api.js";
import { byId, clear, el } from "./dom.js";
import { Desk } from "./desk.js";
import * as session from "./session.js";

let desk = null;

function showSignIn(message, kind = "info") {
  if (desk) desk.stop();
  desk = null;
  byId("desk").hidden = true;
  byId("who").hidden = true;
  byId("nav").hidden = true;
  byId("signin").hidden = false;
  const box = byId("signin-message");
  clear(box);
  box.className = `message ${kind}`;
  if (message) box.append(el("p", {}, message));
  const form = byId("signin-form");
  form.reset();
  form.elements.namedItem("key").focus();
  document.title = "Sign in – Mention Router desk";
}

function keyStoppedWorking(detail) {
  session.forget();
  showSignIn(
    `Signed out: the API no longer accepts your key (${detail}). It may have been revoked or have expired; sign in with a valid key.`,
    "error",
  );
}

/** Start the desk for `saved` ({key, actor}); false (and a message) when the key is not accepted. */
async function start(saved) {
  const api = new Api(saved.key, saved.actor, keyStoppedWorking);
  let me;
  try {
    me = await api.get("/v1/keys/me");
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    if (error.status !== 401) showSignIn(`The API could not be asked who you are: ${error.message}`, "error");
    return false;
  }
  session.save(saved);
  me.actorName = saved.actor || me.name;
  byId("signin").hidden = true;
  byId("desk").hidden = false;
  byId("who").hidden = false;
  byId("nav").hidden = false;
  byId("who-name").textContent = saved.actor ? `${saved.actor} (key ${me.name})` : `key ${me.name}`;
  desk = new Desk(api, me);
  await desk.start();
  return true;
}

function bindSignIn() {
  byId("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const key = String(form.elements.namedItem("key").value).trim();
    const actor = String(form.elements.namedItem("actor").value).trim();
    if (!session.plausibleKey(key)) {
      showSignIn("That does not look like an API key: a key reads mr_<8 hex digits>_<secret>.", "error");
      return;
    }
    await start({ key, actor });
  });
  byId("help").addEventListener("click", () => byId("dialog-help").showModal());
  byId("sign-out").addEventListener("click", () => {
    session.forget();
    showSignIn("Signed out. The key is forgotten by this tab.");
  });
}

async function main() {
  bindSignIn();
  const fromLink = session.takeKeyFromAddress();
  if (fromLink) {
    await start({ key: fromLink, actor: "" });
    return;
  }
  const saved = session.load();
  if (saved) await start(saved);
  else showSignIn("");
}

main().catch((error) => {
  showSignIn(`The desk failed to start: ${error.message}`, "error");
});
