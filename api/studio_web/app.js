// The studio: sign in, sessions as a tree, the chat of the selected session with live progress, the layout
// editor and the subject gallery. Plain ES modules served by the API; no build step (docs/studio.md).

import { api, auth, imageUrl } from "./api.js";
import { el } from "./dom.js";
import { followEvents } from "./events.js";
import { renderGallery } from "./gallery.js";
import { renderCanvas, renderLayoutEditor } from "./layout.js";
import { renderTree } from "./tree.js";

const $ = (id) => document.getElementById(id);
const FINISHED = new Set(["done", "failed"]);

const state = {
  sessions: [],
  session: null,
  turns: new Map(), // index -> Turn
  live: new Map(), // index -> {step, total, preview}
  memory: [],
  editing: null,
  debugOpen: new Set(),
  stream: null,
  renders: new Map(),
  loading: new Set(), // turn indexes being fetched
};

function showError(id, error) { $(id).textContent = error ? String(error.message || error) : ""; }

// --- sign in ---------------------------------------------------------------------------------------

async function signIn(key) {
  auth.key = key;
  try {
    state.sessions = await api.listSessions();
  } catch (error) {
    auth.key = null;
    throw error;
  }
  $("sign-in-view").hidden = true;
  $("studio-view").hidden = false;
  $("sign-out").hidden = false;
  $("who").textContent = "signed in";
  drawTree();
  const wanted = new URLSearchParams(location.hash.slice(1)).get("session");
  if (wanted && state.sessions.some((s) => s.id === wanted)) await selectSession(wanted);
}

function signOut() {
  auth.key = null;
  state.stream?.close();
  location.hash = "";
  location.reload();
}

// --- sessions --------------------------------------------------------------------------------------

function drawTree() {
  renderTree($("session-tree"), state.sessions, state.session?.id, (id) => selectSession(id));
}

async function refreshSessions() {
  state.sessions = await api.listSessions();
  drawTree();
}

async function selectSession(id) {
  state.stream?.close();
  state.session = state.sessions.find((s) => s.id === id);
  state.turns = new Map();
  state.live = new Map();
  state.editing = null;
  state.debugOpen = new Set();
  location.hash = `session=${id}`;
  $("session-title").textContent = state.session.title || `session ${id.slice(0, 8)}`;
  if (state.session.parent_id) {
    $("session-title").append(el("span", { class: "muted" }, ` · branched at turn ${state.session.branch_turn}`));
  }
  $("composer").hidden = false;
  $("upload-form").hidden = false;
  $("turns").replaceChildren();
  drawTree();
  const [turns, memory] = await Promise.all([api.listTurns(id), api.listSubjects(id)]);
  if (state.session?.id !== id) return;
  state.memory = memory;
  turns.forEach((turn) => state.turns.set(turn.index, turn));
  await Promise.all(turns.map((turn) => drawTurn(turn.index)));
  drawGallery();
  state.stream = followEvents(id, onEvent);
  $("message").focus();
}

async function createSession(form) {
  const data = new FormData(form);
  const settings = { preset: data.get("preset") };
  if (data.get("steps")) settings.steps = Number(data.get("steps"));
  const session = await api.createSession({ title: data.get("title"), width: Number(data.get("width")),
    height: Number(data.get("height")), settings });
  await refreshSessions();
  await selectSession(session.id);
}

// --- live events -----------------------------------------------------------------------------------

async function refreshTurn(index) {
  const sessionId = state.session.id;
  const turn = await api.getTurn(sessionId, index);
  if (state.session?.id !== sessionId) return;
  state.turns.set(index, turn);
  await drawTurn(index);
}

async function refreshMemory() {
  const sessionId = state.session.id;
  const memory = await api.listSubjects(sessionId);
  if (state.session?.id !== sessionId) return;
  state.memory = memory;
  drawGallery();
}

function onEvent(type, event) {
  const index = event.turn_index;
  const turn = state.turns.get(index);
  // a replayed event of a turn this page already holds finished says nothing new
  if (turn && FINISHED.has(turn.status)) return;
  const live = state.live.get(index) || {};
  state.live.set(index, live);
  if (type === "step") {
    if (!live.step) performance.mark(`studio:first-step:${index}`);
    Object.assign(live, { step: event.data.step, total: event.data.total });
  } else if (type === "preview") {
    live.preview = event.data.image_url || (event.data.image_id && `/v1/images/${event.data.image_id}`)
      || (event.data.data && `data:image/${event.data.format};base64,${event.data.data}`); // docs/fast_mode.md
  }
  if (!turn) { // events can outrun the answer to the POST: load the turn once, its live state is kept
    if (!state.loading.has(index)) {
      state.loading.add(index);
      refreshTurn(index).finally(() => state.loading.delete(index));
    }
    return;
  }
  switch (type) {
    case "queued": case "planning": case "drawing":
      turn.status = type;
      break;
    case "planned": case "revised":
      turn.plan = event.data.plan;
      break;
    case "step":
      turn.status = "drawing";
      if (updateProgress(index)) return;
      break;
    case "preview":
      break;
    case "done": case "failed":
      state.live.delete(index);
      refreshTurn(index).then(refreshMemory);
      return;
    default:
      return; // a type this page does not know yet
  }
  drawTurn(index);
}

function progressBar(live) {
  return el("div", { class: "progress" },
    el("progress", { max: String(live.total), value: String(live.step) }),
    el("span", { class: "progress-label" }, `step ${live.step}/${live.total}`));
}

function updateProgress(index) {
  const card = document.querySelector(`.turn[data-index="${index}"]`);
  const live = state.live.get(index);
  const old = card?.querySelector(".progress");
  if (!old) return false;
  old.replaceWith(progressBar(live));
  return true;
}

// --- turns -----------------------------------------------------------------------------------------

function button(label, onClick, attributes = {}) {
  const node = el("button", { type: "button", ...attributes }, label);
  node.addEventListener("click", onClick);
  return node;
}

async function drawTurn(index) {
  const ticket = (state.renders.get(index) || 0) + 1;
  state.renders.set(index, ticket);
  const turn = state.turns.get(index);
  const live = state.live.get(index) || {};
  const [image, debug, preview] = await Promise.all([
    imageUrl(turn.image_url).catch(() => null),
    state.debugOpen.has(index) ? imageUrl(turn.debug_image_url).catch(() => null) : null,
    live.preview?.startsWith("data:") ? live.preview : live.preview ? imageUrl(live.preview).catch(() => null) : null,
  ]);
  if (state.renders.get(index) !== ticket || state.turns.get(index) !== turn) return;
  const card = el("li", { class: "turn", "data-index": String(index), "data-status": turn.status });
  const running = !FINISHED.has(turn.status);
  const request = turn.request.message ?? `explicit layout (${turn.request.plan?.items.length ?? 0} subjects)`;
  const tools = el("div", { class: "tools" },
    running ? button("Cancel", () => cancel(index), { class: "danger" }) : null,
    turn.plan && turn.status === "done" ? button("Edit layout", () => { state.editing = index; drawTurn(index); }) : null,
    turn.debug_image_url ? button(state.debugOpen.has(index) ? "Hide detections" : "Show detections", () => {
      state.debugOpen.has(index) ? state.debugOpen.delete(index) : state.debugOpen.add(index);
      drawTurn(index);
    }) : null,
    turn.status === "done" ? button("Branch here", () => branchAt(index)) : null);
  card.append(el("div", { class: "turn-head" },
    el("span", { class: "turn-index" }, `Turn ${index}`),
    el("span", { class: `status status-${turn.status}` }, turn.status),
    el("span", { class: "request" }, request), tools));
  if (running && live.step) card.append(progressBar(live));
  else if (running) card.append(el("div", { class: "progress pending" }, el("span", { class: "progress-label" }, "waiting…")));
  if (turn.error) card.append(el("p", { class: "error turn-error" }, `Failed: ${turn.error}`));
  if (preview && running) card.append(el("img", { class: "preview", src: preview, alt: "preview" }));
  if (turn.plan && state.editing === index) {
    card.append(renderLayoutEditor({
      plan: turn.plan, imageSrc: image, memory: state.memory,
      redrawLabel: index === latestIndex() ? "Redraw with this layout"
        : index === 1 ? "Redraw in a new session" : `Redraw as a branch from turn ${index - 1}`,
      onRedraw: (plan) => redraw(index, plan).catch((error) => showError("composer-error", error)),
      onClose: () => { state.editing = null; drawTurn(index); },
    }));
  } else if (turn.plan || image) {
    const plan = turn.plan || { width: state.session.width, height: state.session.height, items: [] };
    card.append(renderCanvas({ plan, imageSrc: image, items: plan.items, memory: state.memory,
      showBoxes: $("show-boxes").checked }));
  }
  if (debug) card.append(el("img", { class: "debug", src: debug, alt: `detections of turn ${index}` }));
  const old = document.querySelector(`.turn[data-index="${index}"]`);
  if (old) old.replaceWith(card);
  else {
    const later = [...document.querySelectorAll(".turn")].find((node) => Number(node.dataset.index) > index);
    $("turns").insertBefore(card, later || null);
  }
}

function latestIndex() { return Math.max(0, ...state.turns.keys()); }

async function send(body) {
  const sessionId = state.session.id;
  performance.mark("studio:turn-posted");
  const turn = await api.postTurn(sessionId, body);
  if (state.session?.id !== sessionId) return;
  if (!state.turns.has(turn.index)) {
    state.turns.set(turn.index, turn);
    await drawTurn(turn.index);
  }
  document.querySelector(`.turn[data-index="${turn.index}"]`)?.scrollIntoView({ block: "nearest" });
}

async function cancel(index) {
  try {
    await api.cancelTurn(state.session.id, index);
  } catch (error) {
    if (error.status !== 409) showError("composer-error", error);
  }
  await refreshTurn(index);
}

async function branchAt(index) {
  try {
    const branch = await api.branch(state.session.id, index);
    await refreshSessions();
    await selectSession(branch.id);
  } catch (error) {
    showError("composer-error", error);
  }
}

/** The latest turn: a new explicit-plan turn; a past turn n: a branch at n−1 with that turn. */
async function redraw(index, plan) {
  if (index === latestIndex()) {
    state.editing = null;
    await drawTurn(index);
    await send({ plan });
    return;
  }
  const source = state.session;
  const target = index > 1 ? await api.branch(source.id, index - 1)
    : await api.createSession({ title: `${source.title || "session"} (redo)`, width: source.width,
      height: source.height, settings: source.settings });
  await refreshSessions();
  await selectSession(target.id);
  await send({ plan });
}

function drawGallery() {
  renderGallery($("subjects"), state.memory, [...state.turns.values()], {
    onRename: (subjectId, body) => api.renameSubject(state.session.id, subjectId, body)
      .then(refreshMemory).catch((error) => showError("upload-error", error)),
  });
}

// --- wiring ----------------------------------------------------------------------------------------

$("sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  showError("sign-in-error", null);
  signIn($("api-key").value.trim()).catch((error) =>
    showError("sign-in-error", error.status === 401 ? "That key was not accepted." : error));
});
$("sign-out").addEventListener("click", signOut);
$("new-session-form").addEventListener("submit", (event) => {
  event.preventDefault();
  showError("new-session-error", null);
  createSession(event.target).catch((error) => showError("new-session-error", error));
});
$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const message = $("message").value.trim();
  if (!message) return;
  showError("composer-error", null);
  send({ message }).then(() => { $("message").value = ""; }).catch((error) => showError("composer-error", error));
});
$("message").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});
$("show-boxes").addEventListener("change", () => {
  for (const index of state.turns.keys()) if (state.editing !== index) drawTurn(index);
});
$("upload-form").addEventListener("submit", (event) => {
  event.preventDefault();
  showError("upload-error", null);
  const form = new FormData(event.target);
  if (!form.get("subject_id")) form.delete("subject_id");
  api.uploadReference(state.session.id, form).then(() => { event.target.reset(); return refreshMemory(); })
    .catch((error) => showError("upload-error", error));
});

if (auth.key) signIn(auth.key).catch(() => { $("sign-in-view").hidden = false; });
else $("sign-in-view").hidden = false;
