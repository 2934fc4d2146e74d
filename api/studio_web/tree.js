// Sessions as a tree: a branch (parent_id, branch_turn) sits under the session it was branched from.

import { el } from "./dom.js";

export function renderTree(container, sessions, currentId, onSelect) {
  const ids = new Set(sessions.map((s) => s.id));
  const childrenOf = (id) => sessions.filter((s) => s.parent_id === id);
  const node = (session) => {
    const label = session.title || `session ${session.id.slice(0, 8)}`;
    const button = el("button", { type: "button", class: "session-link", "data-session": session.id,
      "aria-current": session.id === currentId ? "page" : null },
      label, el("span", { class: "muted" }, session.parent_id
        ? ` · from turn ${session.branch_turn}` : ` · ${session.width}×${session.height}`));
    button.addEventListener("click", () => onSelect(session.id));
    const kids = childrenOf(session.id);
    return el("li", {}, button, kids.length ? el("ul", {}, ...kids.map(node)) : null);
  };
  const roots = sessions.filter((s) => !s.parent_id || !ids.has(s.parent_id));
  container.replaceChildren(...roots.map(node));
  if (!sessions.length) container.append(el("li", { class: "muted" }, "No sessions yet."));
}
