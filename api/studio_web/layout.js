// A turn's picture with its planned boxes, and the layout editor: drag a box to move it, drag its corner
// to resize it, or focus it and use the arrow keys (Shift+arrows resize). Boxes are in canvas pixels.

import { el } from "./dom.js";

const KEY_STEP = 8;

function placeBox(node, box, plan) {
  node.style.left = `${(box.x / plan.width) * 100}%`;
  node.style.top = `${(box.y / plan.height) * 100}%`;
  node.style.width = `${(box.w / plan.width) * 100}%`;
  node.style.height = `${(box.h / plan.height) * 100}%`;
}

export function subjectLabel(item, memory) {
  const known = memory.find((s) => s.id === item.subject_id);
  return `#${item.subject_id} ${known ? known.name : (item.name || item.phrase.split(",")[0])}`;
}

/** The picture (or a placeholder) with the plan's boxes on top; `onBoxChange(i, box)` makes them editable. */
export function renderCanvas({ plan, imageSrc, items, memory, showBoxes = true, onBoxChange = null }) {
  const figure = el("div", { class: "canvas", style: `aspect-ratio: ${plan.width} / ${plan.height}` });
  if (imageSrc) figure.append(el("img", { class: "picture", src: imageSrc, alt: plan.caption || "turn image" }));
  else figure.append(el("div", { class: "picture placeholder" }, "no image yet"));
  if (!showBoxes && !onBoxChange) return figure;
  const layer = el("div", { class: "boxes" });
  items.forEach((item, index) => {
    const node = el("div", { class: `box color-${index % 6}`, "data-item": String(index) },
      el("span", { class: "label" }, subjectLabel(item, memory)));
    placeBox(node, item.box, plan);
    if (onBoxChange) makeEditable(node, figure, plan, () => item.box, (box) => {
      placeBox(node, box, plan);
      onBoxChange(index, box);
    }, subjectLabel(item, memory));
    layer.append(node);
  });
  figure.append(layer);
  return figure;
}

function makeEditable(node, figure, plan, current, update, label) {
  node.classList.add("editable");
  node.tabIndex = 0;
  node.setAttribute("role", "button");
  node.setAttribute("aria-roledescription", "movable box");
  node.setAttribute("aria-label", `${label}: arrows move, Shift+arrows resize`);
  const handle = el("span", { class: "handle", "aria-hidden": "true" });
  node.append(handle);

  node.addEventListener("pointerdown", (down) => {
    down.preventDefault();
    node.focus();
    const resizing = down.target === handle;
    const start = { ...current() };
    const rect = figure.getBoundingClientRect();
    const scaleX = plan.width / rect.width;
    const scaleY = plan.height / rect.height;
    node.setPointerCapture(down.pointerId);
    const move = (event) => {
      const dx = (event.clientX - down.clientX) * scaleX;
      const dy = (event.clientY - down.clientY) * scaleY;
      update(resizing
        ? { ...start, w: Math.max(8, Math.round(start.w + dx)), h: Math.max(8, Math.round(start.h + dy)) }
        : { ...start, x: Math.round(start.x + dx), y: Math.round(start.y + dy) });
    };
    const up = () => {
      node.removeEventListener("pointermove", move);
      node.removeEventListener("pointerup", up);
      node.removeEventListener("pointercancel", up);
    };
    node.addEventListener("pointermove", move);
    node.addEventListener("pointerup", up);
    node.addEventListener("pointercancel", up);
  });

  node.addEventListener("keydown", (event) => {
    const delta = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] }[event.key];
    if (!delta) return;
    event.preventDefault();
    const box = { ...current() };
    if (event.shiftKey) {
      box.w = Math.max(8, box.w + delta[0] * KEY_STEP);
      box.h = Math.max(8, box.h + delta[1] * KEY_STEP);
    } else {
      box.x += delta[0] * KEY_STEP;
      box.y += delta[1] * KEY_STEP;
    }
    update(box);
  });
}

/** The editor of one turn's layout: the canvas with editable boxes and the list of subjects with phrases. */
export function renderLayoutEditor({ plan, imageSrc, memory, onRedraw, onClose, redrawLabel }) {
  const items = plan.items.map((item) => ({ ...item, box: { ...item.box } }));
  const root = el("div", { class: "editor" });

  function nextSubjectId() {
    const ids = [...memory.map((s) => s.id), ...items.map((i) => i.subject_id)]
      .map((id) => parseInt(String(id).split("-")[0], 10)).filter(Number.isFinite);
    return String((ids.length ? Math.max(...ids) : 0) + 1);
  }

  function draw() {
    const list = el("ul", { class: "items" });
    items.forEach((item, index) => {
      const phrase = el("input", { value: item.phrase, maxlength: "300", "aria-label": `phrase of item ${index + 1}` });
      phrase.addEventListener("input", () => { item.phrase = phrase.value; });
      const subject = el("input", { value: item.subject_id, maxlength: "20", size: "4",
        "aria-label": `subject id of item ${index + 1}` });
      subject.addEventListener("change", () => { item.subject_id = subject.value.trim(); draw(); });
      const remove = el("button", { type: "button", class: "small" }, "Remove");
      remove.addEventListener("click", () => { items.splice(index, 1); draw(); });
      list.append(el("li", { class: `color-${index % 6}` }, el("span", { class: "swatch" }), subject, phrase, remove));
    });
    const add = el("button", { type: "button" }, "Add subject");
    add.addEventListener("click", () => {
      items.push({ subject_id: nextSubjectId(), phrase: "a new subject", name: null,
        box: { x: Math.round(plan.width / 4), y: Math.round(plan.height / 4),
          w: Math.round(plan.width / 2), h: Math.round(plan.height / 2) } });
      draw();
    });
    const redraw = el("button", { type: "button", class: "primary" }, redrawLabel);
    redraw.addEventListener("click", () => {
      const { edit, ...rest } = plan; // an edit region belongs to the old picture
      onRedraw({ ...rest, items: items.map((item) => ({ ...item })) });
    });
    const close = el("button", { type: "button" }, "Close editor");
    close.addEventListener("click", onClose);
    const canvas = renderCanvas({ plan, imageSrc, items, memory,
      onBoxChange: (index, box) => { items[index].box = box; } });
    root.replaceChildren(canvas, list, el("div", { class: "actions" }, add, redraw, close));
  }
  draw();
  return root;
}
