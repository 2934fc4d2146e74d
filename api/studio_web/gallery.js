// The subject memory: each subject's reference, where it came from, its crops over the turns; components
// (ids like "1-2") under their subject; rename in place.

import { imageUrl } from "./api.js";
import { el } from "./dom.js";

const SOURCE = { upload: "uploaded", prerender: "from a pre-render", final: "cropped from a turn" };

function thumb(url, alt) {
  const img = el("img", { class: "thumb", alt });
  imageUrl(url).then((src) => { if (src) img.src = src; }).catch(() => img.classList.add("broken"));
  return img;
}

function history(subject, turns) {
  const crops = turns.flatMap((turn) => (turn.crops || [])
    .filter((crop) => crop.subject_id === subject.id && crop.found && crop.crop_url)
    .map((crop) => ({ turn: turn.index, url: crop.crop_url })));
  if (!crops.length) return null;
  return el("div", { class: "history", "aria-label": `history of ${subject.name}` },
    ...crops.slice(-6).map((crop) => el("figure", {}, thumb(crop.url, `turn ${crop.turn}`),
      el("figcaption", {}, `t${crop.turn}`))));
}

function card(subject, turns, onRename) {
  const seen = [
    subject.first_seen_turn != null ? `first seen turn ${subject.first_seen_turn}` : null,
    subject.refreshed_turn != null ? `refreshed turn ${subject.refreshed_turn}` : null,
  ].filter(Boolean).join(" · ");
  const title = el("strong", { class: "subject-name" }, subject.name);
  const rename = el("button", { type: "button", class: "small" }, "Rename");
  const body = el("div", { class: "subject-body" },
    el("div", {}, title, " ", el("span", { class: "muted" }, `#${subject.id}`), " ", rename),
    subject.description ? el("div", { class: "muted" }, subject.description) : null,
    el("div", { class: "source" }, subject.reference_source ? SOURCE[subject.reference_source] || subject.reference_source
      : "no reference yet", subject.reference_score != null ? ` (score ${subject.reference_score.toFixed(2)})` : ""),
    seen ? el("div", { class: "muted" }, seen) : null,
    history(subject, turns));
  rename.addEventListener("click", () => {
    const name = el("input", { value: subject.name, maxlength: "100", required: true, "aria-label": "new name" });
    const description = el("input", { value: subject.description, maxlength: "500", "aria-label": "description" });
    const form = el("form", { class: "rename" }, name, description,
      el("button", { type: "submit", class: "small" }, "Save"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      onRename(subject.id, { name: name.value.trim(), description: description.value });
    });
    rename.replaceWith(form);
    name.focus();
  });
  return el("li", { class: "subject", "data-subject": subject.id },
    subject.reference_url ? thumb(subject.reference_url, `reference of ${subject.name}`)
      : el("div", { class: "thumb empty" }, "?"),
    body);
}

export function renderGallery(container, memory, turns, { onRename }) {
  const roots = memory.filter((s) => !s.parent_id);
  const children = (parent) => memory.filter((s) => s.parent_id === parent.id);
  const orphans = memory.filter((s) => s.parent_id && !memory.some((p) => p.id === s.parent_id));
  const build = (subject) => {
    const node = card(subject, turns, onRename);
    const parts = children(subject);
    if (parts.length) node.append(el("ul", { class: "components" }, ...parts.map(build)));
    return node;
  };
  container.replaceChildren(...[...roots, ...orphans].map(build));
  if (!memory.length) container.append(el("li", { class: "muted" }, "No subjects yet."));
}
