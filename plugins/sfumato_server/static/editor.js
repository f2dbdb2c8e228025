// sfumato graph editor: plain JavaScript on a DOM + SVG canvas, no build step, no library.
//
// The document being edited is kept in exactly the graph file format (`doc`); every edit
// changes it and the canvas is drawn again from it, so saving is just writing `doc` out.
// Link rules (which port type may feed which) and validation come from the server, which
// answers with the engine's own registry and checks: the editor never decides those itself.
// Uses `api`, `withToken`, `imageUrl` and `loadGallery` from app.js (loaded first); the file format
// is editor-document.js, the form controls editor-widgets.js.
import {
  PARAM_TYPES, clone, dependencyDepths, documentText, emptyDoc, inputRef, literalJSON, metaPos, ordered,
  removeFromDocument, renameInDocument, subgraphSpec,
} from "./editor-document.js";
import { paramControl, portColour, widgetFor } from "./editor-widgets.js";

const $ = (id) => document.getElementById(id);
const NODE_WIDTH = 220;  // as .ed-node in editor.css

const ed = {
  specs: {}, ports: { compatible: {} }, models: [],
  doc: emptyDoc(), undo: [], redo: [],
  view: { x: 40, y: 40, zoom: 1 }, selected: new Set(), expanded: new Set(),
  issues: [], clipboard: null, validateTimer: null, validation: 0, source: null,
  graphs: [], subgraphs: {}, opened: new Set(),  // graphs usable as graph:NAME nodes; open subgraph nodes
  positions: {}, // node id -> {x, y}: meta.pos when the document has one, else the automatic layout
};

function status(text, isError = false) {
  const line = $("ed-status");
  line.textContent = text;
  line.classList.toggle("errors", isError);
}

// Every edit goes through here: one undo step, then the canvas is drawn again and checked.
function change(edit) {
  const before = JSON.stringify(ed.doc);
  edit(ed.doc);
  if (JSON.stringify(ed.doc) === before) return;
  ed.undo.push(before);
  if (ed.undo.length > 200) ed.undo.shift();
  ed.redo = [];
  render();
  validateSoon();
}
function restore(from, to) {
  if (!from.length) return;
  to.push(JSON.stringify(ed.doc));
  ed.doc = JSON.parse(from.pop());
  for (const id of [...ed.selected]) if (!(id in ed.doc.nodes)) ed.selected.delete(id);
  render();
  validateSoon();
}

async function loadDocument(doc, label) {
  if (!doc || typeof doc !== "object" || typeof doc.nodes !== "object" || doc.nodes === null) {
    status(`${label} is not a graph document (it has no "nodes" object)`, true);
    return;
  }
  const odd = Object.entries(doc.nodes).find(([, node]) => !node || typeof node !== "object" || Array.isArray(node));
  if (odd) {
    status(`${label} is not a graph document: node ${JSON.stringify(odd[0])} is not an object`, true);
    return;
  }
  await ensureSpecs(Object.values(doc.nodes).map((node) => node && node.type));
  ed.undo.push(JSON.stringify(ed.doc));
  ed.redo = [];
  ed.doc = doc;
  ed.selected.clear();
  ed.expanded.clear();
  ed.positions = {};
  render();
  fitView();
  validateSoon(0);
  status(`Opened ${label}.`);
}

// -- subgraphs -----------------------------------------------------------------------------

// A graph used as a node ("type": "graph:NAME") has the node type the engine gives it: its
// params are literal inputs, its declared inputs are link inputs, its outputs are typed by the
// inner nodes that make them (graph_type_spec in the engine). The server's graphs supply the
// document; validation of the whole stays the engine's.
async function ensureSpecs(types) {
  for (const type of new Set(types)) {
    if (typeof type !== "string" || ed.specs[type] || !type.startsWith("graph:")) continue;
    const name = type.slice("graph:".length).replace(/\.json$/, "");
    try {
      const answer = await api(`/api/graphs/${encodeURIComponent(name)}`);
      ed.subgraphs[type] = answer;
      ed.specs[type] = subgraphSpec(type, answer.document, ed.specs);
    } catch { /* not one of this server's graphs: drawn as an unknown type, validation says why */ }
  }
}

function uniqueId(base) {
  let id = base, n = 2;
  while (id in ed.doc.nodes) id = `${base}_${n++}`;
  return id;
}

async function addNode(type, at) {
  await ensureSpecs([type]);
  const spec = ed.specs[type];
  if (!spec) return null;
  // "encode.text" -> "encode_text": the last word alone ("text", "image") says too little.
  const id = uniqueId(type.replace(/^graph:/, "").replace(/\.json$/, "").replace(/[.\-]/g, "_"));
  change((doc) => {
    doc.nodes[id] = { type, inputs: {}, meta: { pos: [Math.round(at.x), Math.round(at.y)] } };
  });
  ed.selected = new Set([id]);
  paintSelection();
  status(`Added ${id} (${type}).`);
  return id;
}

function removeNodes(ids) {
  if (!ids.size) return;
  change((doc) => removeFromDocument(doc, ids));
  ed.selected.clear();
}

// A new id for a node: every link from it and every graph output naming it follow.
function renameNode(oldId, newId) {
  if (newId === oldId) return true;
  if (!/^[A-Za-z0-9_-]+$/.test(newId)) { status("a node id is letters, digits, _ and -", true); return false; }
  if (newId in ed.doc.nodes) { status(`there is already a node ${newId}`, true); return false; }
  change((doc) => renameInDocument(doc, oldId, newId));
  if (ed.selected.delete(oldId)) ed.selected.add(newId);
  ed.positions[newId] = ed.positions[oldId];
  for (const set of [ed.expanded, ed.opened]) if (set.delete(oldId)) set.add(newId);
  render();
  status(`Renamed ${oldId} to ${newId}.`);
  return true;
}

function editId(id) {
  const element = nodeElementOf(id);
  const title = element && element.querySelector("header strong");
  if (!title) return;
  const box = document.createElement("input");
  box.className = "ed-rename";
  box.value = id;
  box.setAttribute("aria-label", `new id for node ${id}`);
  title.replaceWith(box);
  box.focus();
  box.select();
  let done = false;
  const finish = (keep) => {
    if (done) return;
    done = true;
    if (!keep || !renameNode(id, box.value.trim())) render();
    nodeElementOf(keep ? box.value.trim() : id)?.focus();
  };
  box.addEventListener("keydown", (event) => {
    event.stopPropagation();
    if (event.key === "Enter") finish(true);
    if (event.key === "Escape") finish(false);
  });
  box.addEventListener("pointerdown", (event) => event.stopPropagation());
  box.addEventListener("blur", () => finish(true));
}

function copySelection() {
  if (!ed.selected.size) return;
  ed.clipboard = [...ed.selected].map((id) => ({ id, node: clone(ed.doc.nodes[id]), pos: ed.positions[id] }));
  status(`Copied ${ed.clipboard.length} node(s).`);
}

function paste() {
  if (!ed.clipboard) return;
  const renamed = {};
  const added = [];
  change((doc) => {
    for (const item of ed.clipboard) {
      const id = uniqueId(item.id);
      renamed[item.id] = id;
      doc.nodes[id] = clone(item.node);  // reserve the id before naming the next one
      added.push(id);
    }
    for (const item of ed.clipboard) {
      const node = doc.nodes[renamed[item.id]];
      const pos = item.pos || { x: 0, y: 0 };
      node.meta = { ...(node.meta || {}), pos: [Math.round(pos.x + 40), Math.round(pos.y + 40)] };
      // Links among the copied nodes point at the copies; links from outside stay as they were.
      for (const [name, raw] of Object.entries(node.inputs || {})) {
        const ref = inputRef(raw);
        if (ref.kind === "link" && renamed[ref.node]) node.inputs[name] = { from: `${renamed[ref.node]}.${ref.output}` };
      }
    }
  });
  ed.selected = new Set(added);
  paintSelection();
  status(`Pasted ${added.length} node(s).`);
}

// -- layout ------------------------------------------------------------------------------

// Nodes without a stored position go left to right by dependency: a node's column is one past
// its deepest upstream node; within a column they stack in document order.
function autoLayout(elements) {
  const nodes = ed.doc.nodes;
  const depth = dependencyDepths(nodes);
  const columns = {};
  for (const id of Object.keys(nodes)) {
    if (metaPos(nodes[id])) continue;
    (columns[depth[id]] ||= []).push(id);
  }
  for (const [column, ids] of Object.entries(columns)) {
    let y = 0;
    for (const id of ids) {
      ed.positions[id] = { x: Number(column) * (NODE_WIDTH + 70), y };
      y += (elements[id] ? elements[id].offsetHeight : 160) + 30;
    }
  }
}

// -- drawing -----------------------------------------------------------------------------

function render() {
  const world = $("ed-world");
  // Drawing again replaces every node element: keep the keyboard focus where it was.
  const active = document.activeElement;
  const focus = !$("editor").contains(active) ? null : {
    id: active.id, node: active.classList.contains("ed-node") ? active.dataset.id : null,
    canvas: $("ed-canvas").contains(active) };
  for (const element of world.querySelectorAll(".ed-node")) element.remove();
  $("ed-name").value = ed.doc.name || "";
  const elements = {};
  for (const [id, node] of Object.entries(ed.doc.nodes)) {
    const element = nodeElement(id, node);
    world.append(element);
    elements[id] = element;
  }
  for (const [id, node] of Object.entries(ed.doc.nodes)) {
    const pos = metaPos(node);
    if (pos) ed.positions[id] = pos;
  }
  for (const id of Object.keys(ed.positions)) if (!(id in ed.doc.nodes)) delete ed.positions[id];
  autoLayout(elements);
  for (const [id, element] of Object.entries(elements)) {
    element.style.left = ed.positions[id].x + "px";
    element.style.top = ed.positions[id].y + "px";
  }
  $("ed-empty").hidden = Object.keys(ed.doc.nodes).length > 0;
  $("ed-undo").disabled = !ed.undo.length;
  $("ed-redo").disabled = !ed.redo.length;
  renderParams();
  paintIssues();
  paintSelection();
  drawLinks();
  if (focus) {
    const target = (focus.id && document.getElementById(focus.id)) || (focus.node && nodeElementOf(focus.node))
      || (focus.canvas ? $("ed-canvas") : null);
    if (target && target !== document.activeElement) target.focus({ preventScroll: true });
  }
}

function nodeElement(id, node) {
  const spec = ed.specs[node.type];
  const element = document.createElement("div");
  element.className = ed.opened.has(id) ? "ed-node open" : "ed-node";
  element.dataset.id = id;
  element.tabIndex = 0;
  element.setAttribute("role", "group");
  element.setAttribute("aria-label", `node ${id} (${node.type})`);
  const head = document.createElement("header");
  const title = document.createElement("strong");
  title.textContent = node.title || id;
  const type = document.createElement("small");
  type.textContent = node.type;
  const state = document.createElement("span");
  state.className = "ed-state";
  head.append(title, type, state);
  element.append(head);
  if (!spec) {
    const unknown = document.createElement("p");
    unknown.className = "errors";
    unknown.textContent = `unknown node type ${node.type}`;
    element.append(unknown);
    return element;
  }
  if (ed.subgraphs[node.type]) element.append(subgraphBar(id, node.type));
  for (const output of spec.outputs) {
    const row = document.createElement("div");
    row.className = "ed-row ed-out";
    row.dataset.output = output.name;
    const name = document.createElement("span");
    name.textContent = output.name;
    const graphOutput = Object.entries(ed.doc.outputs || {}).find(([, t]) => t === `${id}.${output.name}`);
    if (graphOutput) name.textContent += ` → output “${graphOutput[0]}”`;
    row.append(name, socket("out", output.type, `${id}.${output.name}`));
    element.append(row);
  }
  const hidden = [];
  for (const input of spec.inputs) {
    const raw = (node.inputs || {})[input.name];
    const literal = literalSchema(spec, input.name);
    // Optional literal inputs left at their default fold away, so big nodes stay readable.
    const quiet = raw === undefined && !input.required && literal && !ed.expanded.has(id);
    const row = inputRow(id, spec, input, raw, literal);
    if (quiet) { row.hidden = true; hidden.push(row); }
    element.append(row);
  }
  if (hidden.length || ed.expanded.has(id)) {
    const more = document.createElement("button");
    more.type = "button";
    more.className = "ed-more";
    more.textContent = ed.expanded.has(id) ? "fewer settings" : `${hidden.length} more setting${hidden.length > 1 ? "s" : ""}`;
    more.addEventListener("click", () => {
      if (ed.expanded.has(id)) ed.expanded.delete(id); else ed.expanded.add(id);
      render();
    });
    element.append(more);
  }
  const issues = document.createElement("ul");
  issues.className = "ed-node-issues";
  element.append(issues);
  const preview = document.createElement("img");
  preview.className = "ed-preview";
  preview.alt = `preview of ${id}`;
  preview.hidden = true;
  element.append(preview);
  return element;
}

// A subgraph node is drawn collapsed; "open" shows its inner graph in place, inside the node.
function subgraphBar(id, type) {
  const bar = document.createElement("div");
  bar.className = "ed-subgraph";
  const open = ed.opened.has(id);
  const toggle = document.createElement("button");
  toggle.type = "button";
  toggle.className = "ed-open-subgraph";
  toggle.setAttribute("aria-expanded", String(open));
  toggle.textContent = `${open ? "▾ close" : "▸ open"} subgraph (${ed.specs[type].subgraph} nodes)`;
  toggle.addEventListener("click", () => {
    if (ed.opened.has(id)) ed.opened.delete(id); else ed.opened.add(id);
    render();
  });
  bar.append(toggle);
  if (open) {
    const inner = document.createElement("div");
    inner.className = "ed-inner graph-picture";
    inner.innerHTML = ed.subgraphs[type].svg;  // drawn by the server from the graph file
    const svg = inner.querySelector("svg");
    if (svg && !svg.hasAttribute("viewBox")) {
      svg.setAttribute("viewBox", `0 0 ${parseFloat(svg.getAttribute("width"))} ${parseFloat(svg.getAttribute("height"))}`);
      svg.removeAttribute("width");
      svg.removeAttribute("height");
    }
    bar.append(inner);
  }
  return bar;
}

function socket(direction, type, key) {
  const dot = document.createElement("i");
  dot.className = `ed-socket ed-socket-${direction}`;
  dot.dataset.type = type;
  dot.dataset.key = key;
  dot.style.setProperty("--c", portColour(type));
  dot.title = type;
  dot.tabIndex = 0;
  dot.setAttribute("role", "button");
  dot.setAttribute("aria-label", direction === "out"
    ? `output ${key} (${type}): Enter picks it for a link` : `input ${key} (${type}): Enter links the picked output here`);
  return dot;
}

// The literal branch of an input's JSON Schema (the third anyOf option), or null for link-only inputs.
function literalSchema(spec, name) {
  const entry = spec.input_schema.properties[name];
  const options = (entry && entry.anyOf) || [];
  return options.length > 2 ? options[2] : null;
}

function inputRow(id, spec, input, raw, literal) {
  const row = document.createElement("div");
  row.className = "ed-row ed-in";
  row.dataset.input = input.name;
  row.dataset.type = input.type;
  row.append(socket("in", input.type, `${id}.${input.name}`));
  const label = document.createElement("label");
  const fieldId = `ed-f-${id}-${input.name}`;
  label.htmlFor = fieldId;
  label.textContent = input.name + (input.required ? " *" : "");
  label.title = `${input.type}${input.description ? ": " + input.description : ""}`;
  row.append(label);
  const ref = raw === undefined ? null : inputRef(raw);
  if (ref && ref.kind === "link") {
    row.append(chip(`← ${ref.node}.${ref.output}`, `unlink ${id}.${input.name}`, () => change((doc) => { delete doc.nodes[id].inputs[input.name]; })));
  } else if (ref && ref.kind === "param") {
    row.append(chip(`param ${ref.name}`, `stop using parameter ${ref.name} for ${id}.${input.name}`,
      () => change((doc) => { delete doc.nodes[id].inputs[input.name]; })));
  } else if (ref && ref.kind === "input") {
    row.append(chip(`graph input ${ref.name}`, `disconnect ${id}.${input.name} from the graph input ${ref.name}`,
      () => change((doc) => { delete doc.nodes[id].inputs[input.name]; })));
  } else if (literal) {
    const widget = widgetFor(fieldId, input, literal, ref ? ref.value : undefined, (value) => change((doc) => {
      if (value === undefined) delete doc.nodes[id].inputs[input.name];
      else (doc.nodes[id].inputs ||= {})[input.name] = literalJSON(value);
    }), ed.models);
    row.append(widget);
    if (PARAM_TYPES[input.type]) {
      const promote = document.createElement("button");
      promote.type = "button";
      promote.className = "ed-promote";
      promote.textContent = "⇧";
      promote.title = "make this input a graph parameter";
      promote.setAttribute("aria-label", `make ${id}.${input.name} a graph parameter`);
      promote.addEventListener("click", () => openPromote(id, input, literal, ref ? ref.value : input.default));
      row.append(promote);
    }
  } else {
    const hint = document.createElement("span");
    hint.className = "hint";
    hint.textContent = input.required ? "link needed" : "(optional link)";
    row.append(hint);
  }
  const problem = document.createElement("span");
  problem.className = "ed-field-issue errors";
  row.append(problem);
  return row;
}

function chip(text, label, remove) {
  const wrap = document.createElement("span");
  wrap.className = "ed-chip";
  wrap.textContent = text;
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = "×";
  button.setAttribute("aria-label", label);
  button.addEventListener("click", remove);
  wrap.append(button);
  return wrap;
}

// Graph parameters with their defaults (what a run from the editor uses), editable in place.
function renderParams() {
  const box = $("ed-params");
  box.replaceChildren();
  const params = Object.entries(ed.doc.params || {});
  if (!params.length) {
    const none = document.createElement("p");
    none.className = "hint";
    none.textContent = "none: use an input's ⇧ button to make it one.";
    box.append(none);
    return;
  }
  for (const [name, declaration] of params) {
    const row = document.createElement("div");
    row.className = "ed-param";
    row.dataset.param = name;
    const label = document.createElement("label");
    label.htmlFor = `ed-p-${name}`;
    label.textContent = `${name} `;
    const type = document.createElement("small");
    type.textContent = declaration.type;
    label.append(type);
    label.title = declaration.description || "";
    const control = paramControl(declaration, (v) => change((doc) => {
      if (v === undefined) delete doc.params[name].default; else doc.params[name].default = v;
    }));
    control.id = `ed-p-${name}`;
    row.append(label, control);
    box.append(row);
  }
}

function nodeElementOf(id) { return $("ed-world").querySelector(`.ed-node[data-id="${CSS.escape(id)}"]`); }

// Socket centres in world coordinates (the canvas' untransformed space).
function socketPoint(dot) {
  const canvas = $("ed-canvas").getBoundingClientRect();
  const box = dot.getBoundingClientRect();
  return {
    x: (box.left + box.width / 2 - canvas.left - ed.view.x) / ed.view.zoom,
    y: (box.top + box.height / 2 - canvas.top - ed.view.y) / ed.view.zoom,
  };
}
function curve(a, b) {
  const bend = Math.max(40, Math.abs(b.x - a.x) / 2);
  return `M${a.x},${a.y} C${a.x + bend},${a.y} ${b.x - bend},${b.y} ${b.x},${b.y}`;
}

function drawLinks() {
  applyView();
  const svg = $("ed-links");
  svg.replaceChildren();
  const world = $("ed-world");
  for (const [id, node] of Object.entries(ed.doc.nodes)) {
    for (const [name, raw] of Object.entries(node.inputs || {})) {
      const ref = inputRef(raw);
      if (ref.kind !== "link") continue;
      const from = world.querySelector(`.ed-socket-out[data-key="${CSS.escape(ref.node + "." + ref.output)}"]`);
      const to = world.querySelector(`.ed-socket-in[data-key="${CSS.escape(id + "." + name)}"]`);
      if (!from || !to) continue;  // a dangling link: validation names it on the node
      const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
      path.setAttribute("d", curve(socketPoint(from), socketPoint(to)));
      path.setAttribute("stroke", portColour(from.dataset.type));
      path.classList.add("ed-link");
      path.dataset.link = `${ref.node}.${ref.output}->${id}.${name}`;
      svg.append(path);
    }
  }
}

function applyView() {
  $("ed-world").style.transform = `translate(${ed.view.x}px, ${ed.view.y}px) scale(${ed.view.zoom})`;
}

function paintSelection() {
  for (const element of $("ed-world").querySelectorAll(".ed-node")) {
    element.classList.toggle("selected", ed.selected.has(element.dataset.id));
  }
}

function zoomAt(factor, cx, cy) {
  const zoom = Math.min(2.5, Math.max(0.2, ed.view.zoom * factor));
  // Keep the point under the pointer where it is.
  ed.view.x = cx - (cx - ed.view.x) * (zoom / ed.view.zoom);
  ed.view.y = cy - (cy - ed.view.y) * (zoom / ed.view.zoom);
  ed.view.zoom = zoom;
  applyView();
}

function fitView() {
  const ids = Object.keys(ed.doc.nodes);
  const canvas = $("ed-canvas");
  if (!ids.length) { ed.view = { x: 40, y: 40, zoom: 1 }; applyView(); return; }
  let left = Infinity, top = Infinity, right = -Infinity, bottom = -Infinity;
  for (const id of ids) {
    const element = nodeElementOf(id);
    const pos = ed.positions[id];
    left = Math.min(left, pos.x); top = Math.min(top, pos.y);
    right = Math.max(right, pos.x + element.offsetWidth); bottom = Math.max(bottom, pos.y + element.offsetHeight);
  }
  const zoom = Math.min(1, (canvas.clientWidth - 40) / (right - left), (canvas.clientHeight - 40) / (bottom - top));
  ed.view = { zoom: Math.max(0.2, zoom), x: 20 - left * Math.max(0.2, zoom), y: 20 - top * Math.max(0.2, zoom) };
  drawLinks();
}

// -- validation ----------------------------------------------------------------------------

function validateSoon(delay = 300) {
  clearTimeout(ed.validateTimer);
  ed.validateTimer = setTimeout(validateNow, delay);
}

async function validateNow() {
  const ticket = ++ed.validation;
  const list = $("ed-issues");
  list.dataset.state = "checking";
  let issues, warnings = [];
  try {
    const answer = await api("/api/validate", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ graph: ordered(ed.doc) }),
    });
    issues = answer.issues;
    warnings = answer.warnings || [];
  } catch (error) {
    issues = (error.body && error.body.issues) || [{ path: "$", node: null, message: error.message }];
  }
  if (ticket !== ed.validation) return;  // a newer edit is being checked
  ed.issues = issues;
  ed.warnings = warnings;
  paintIssues();
  list.dataset.state = issues.length ? "invalid" : "valid";
}

// Each issue (and warning) goes on its node and, when the path names one, on its field; all are listed.
function paintIssues() {
  const list = $("ed-issues");
  list.replaceChildren();
  const world = $("ed-world");
  for (const element of world.querySelectorAll(".ed-node")) element.classList.remove("has-issue", "has-warning");
  for (const element of world.querySelectorAll(".ed-node-issues")) element.replaceChildren();
  for (const element of world.querySelectorAll(".ed-field-issue")) element.textContent = "";
  for (const element of world.querySelectorAll(".ed-row.has-issue, .ed-row.has-warning")) element.classList.remove("has-issue", "has-warning");
  if (!Object.keys(ed.doc.nodes).length) return;
  if (!ed.issues.length) {
    const ok = document.createElement("li");
    ok.className = "ed-valid";
    ok.textContent = "valid: the engine accepts this graph";
    list.append(ok);
  }
  const warnings = (ed.warnings || []).map((w) => ({ ...w, warning: true }));
  for (const issue of [...ed.issues, ...warnings]) {
    const mark = issue.warning ? "has-warning" : "has-issue";
    const item = document.createElement("li");
    item.textContent = `${issue.warning ? "warning: " : ""}${issue.path}: ${issue.message}`;
    if (issue.warning) item.className = "ed-warning";
    list.append(item);
    // A problem inside a subgraph names the inner node ("outer/inner"): show it on the outer node.
    const nodeId = issue.node && !(issue.node in ed.doc.nodes) ? issue.node.split("/")[0] : issue.node;
    const element = nodeId ? nodeElementOf(nodeId) : null;
    if (!element) continue;
    element.classList.add(mark);
    item.addEventListener("click", () => { ed.selected = new Set([nodeId]); paintSelection(); element.focus(); });
    const prefix = `nodes.${nodeId}.inputs.`;
    const field = issue.path.startsWith(prefix) ? issue.path.slice(prefix.length).split(".")[0] : null;
    const row = field ? element.querySelector(`.ed-in[data-input="${CSS.escape(field)}"]`) : null;
    if (row) {
      row.hidden = false;
      row.classList.add(mark);
      const text = row.querySelector(".ed-field-issue");
      text.textContent = (text.textContent ? text.textContent + "; " : "") + issue.message;
      text.classList.toggle("ed-warning", Boolean(issue.warning) && !row.classList.contains("has-issue"));
    } else {
      const line = document.createElement("li");
      line.textContent = issue.message;
      if (issue.warning) line.className = "ed-warning";
      element.querySelector(".ed-node-issues").append(line);
    }
  }
  drawLinks();
}

// -- promoting an input to a graph parameter -------------------------------------------------

let promoting = null;
function openPromote(nodeId, input, schema, current) {
  promoting = { nodeId, input, schema };
  let name = input.name;
  if ((ed.doc.params || {})[name]) name = `${nodeId}_${input.name}`;
  $("ed-param-which").textContent = `${nodeId}.${input.name} (${input.type}) will be set by the caller.`;
  $("ed-param-name").value = name;
  $("ed-param-default").value = current === undefined || current === null ? ""
    : typeof current === "string" ? current : JSON.stringify(current);
  $("ed-param-error").textContent = "";
  $("ed-param-dialog").showModal();
  $("ed-param-name").select();
}

function promote(event) {
  event.preventDefault();
  const { nodeId, input, schema } = promoting;
  const name = $("ed-param-name").value.trim();
  const type = PARAM_TYPES[input.type];
  if (!/^[A-Za-z_][A-Za-z0-9_-]*$/.test(name)) { $("ed-param-error").textContent = "a name is letters, digits, _ and -"; return; }
  const existing = (ed.doc.params || {})[name];
  if (existing && existing.type !== type) {
    $("ed-param-error").textContent = `${name} is already a ${existing.type} parameter`;
    return;
  }
  const text = $("ed-param-default").value;
  const declaration = { type };
  if (text.trim() !== "" || type === "str") {
    try {
      declaration.default = type === "str" ? text : type === "list[str]" && !text.trim().startsWith("[")
        ? text.split(",").map((s) => s.trim()).filter(Boolean) : JSON.parse(text);
    } catch { $("ed-param-error").textContent = `the default is not a ${type} value`; return; }
  }
  if (input.description) declaration.description = input.description;
  if (Array.isArray(schema.enum)) declaration.choices = schema.enum;
  const low = schema.minimum, high = schema.maximum;
  if (low !== undefined && (type === "int" || type === "float")) declaration.minimum = low;
  if (high !== undefined && (type === "int" || type === "float")) declaration.maximum = high;
  change((doc) => {
    if (!doc.params) {
      // Parameters come before nodes in the file.
      const rest = { ...doc };
      for (const key of Object.keys(doc)) delete doc[key];
      Object.assign(doc, ordered({ ...rest, params: {} }));
    }
    if (!existing) doc.params[name] = declaration;
    (doc.nodes[nodeId].inputs ||= {})[input.name] = { param: name };
  });
  $("ed-param-dialog").close();
  status(`${nodeId}.${input.name} is now the parameter ${name}.`);
}

// -- pointer: moving nodes, linking, panning -------------------------------------------------

function onPointerDown(event) {
  const canvas = $("ed-canvas");
  const out = event.target.closest(".ed-socket-out");
  const nodeHead = event.target.closest(".ed-node header");
  const node = event.target.closest(".ed-node");
  if (event.button !== 0 && event.button !== 1) return;
  if (out && event.button === 0) return startLink(event, out);
  const linkedIn = event.target.closest(".ed-socket-in");
  if (linkedIn && event.button === 0) {
    // Dragging a linked input's socket picks its link up: drop it on another input, or let go to remove it.
    const [nodeId, name] = [linkedIn.closest(".ed-node").dataset.id, linkedIn.closest(".ed-in").dataset.input];
    const ref = inputRef((ed.doc.nodes[nodeId].inputs || {})[name]);
    const source = ref.kind === "link" && $("ed-world").querySelector(`.ed-socket-out[data-key="${CSS.escape(ref.node + "." + ref.output)}"]`);
    if (source) return startLink(event, source, { node: nodeId, input: name });
  }
  if (node && event.button === 0) {
    const id = node.dataset.id;
    if (event.shiftKey || event.ctrlKey || event.metaKey) {
      if (ed.selected.has(id)) ed.selected.delete(id); else ed.selected.add(id);
    } else if (!ed.selected.has(id)) ed.selected = new Set([id]);
    paintSelection();
    // The drag below prevents the default focus; keys (Delete, Ctrl+C) go to the focused node.
    if (!event.target.closest("input, textarea, select, button")) node.focus({ preventScroll: true });
    if (nodeHead) startMove(event);
    return;
  }
  // The background: pan (and clear the selection on a plain click).
  if (!event.shiftKey) { ed.selected.clear(); paintSelection(); }
  canvas.focus({ preventScroll: true });
  const start = { x: event.clientX, y: event.clientY, vx: ed.view.x, vy: ed.view.y };
  drag(event, (move) => {
    ed.view.x = start.vx + move.clientX - start.x;
    ed.view.y = start.vy + move.clientY - start.y;
    applyView();
  });
}

function drag(event, onMove, onUp = () => {}) {
  event.preventDefault();
  const move = (e) => onMove(e);
  const up = (e) => {
    window.removeEventListener("pointermove", move);
    window.removeEventListener("pointerup", up);
    onUp(e);
  };
  window.addEventListener("pointermove", move);
  window.addEventListener("pointerup", up);
}

function startMove(event) {
  const ids = [...ed.selected];
  const from = Object.fromEntries(ids.map((id) => [id, { ...ed.positions[id] }]));
  const start = { x: event.clientX, y: event.clientY };
  let moved = false;
  drag(event, (move) => {
    const dx = (move.clientX - start.x) / ed.view.zoom, dy = (move.clientY - start.y) / ed.view.zoom;
    moved = moved || Math.abs(dx) + Math.abs(dy) > 2;
    for (const id of ids) {
      ed.positions[id] = { x: from[id].x + dx, y: from[id].y + dy };
      const element = nodeElementOf(id);
      element.style.left = ed.positions[id].x + "px";
      element.style.top = ed.positions[id].y + "px";
    }
    drawLinks();
  }, () => {
    if (!moved) return;
    // A moved node keeps its place in the file (meta.pos); one undo step for the whole move.
    change((doc) => {
      for (const id of ids) {
        doc.nodes[id].meta = { ...(doc.nodes[id].meta || {}), pos: [Math.round(ed.positions[id].x), Math.round(ed.positions[id].y)] };
      }
    });
  });
}

// Dragging from an output: each input under the pointer says whether the engine would accept
// the link (ok) or not (refused); letting go on a refused input changes nothing.
// Whether the engine would accept a link from output `key` (of `sourceType`) to the input `row`.
function linkVerdict(key, sourceType, row) {
  const target = row.closest(".ed-node").dataset.id;
  const targetType = row.dataset.type;
  if (target === key.slice(0, key.lastIndexOf("."))) return { ok: false, why: "a node cannot feed itself" };
  const ok = (ed.ports.compatible[sourceType] || []).includes(targetType);
  return { ok, why: ok ? `${sourceType} → ${targetType}` : `${sourceType} cannot feed ${targetType} (${target}.${row.dataset.input})` };
}

// The keyboard way to link: Enter on an output socket picks it, Enter on an input socket links it
// (or says why the engine would refuse); Escape drops it.
function socketKeys(event) {
  const dot = event.target;
  if (event.key === "Escape" && ed.picked) { ed.picked = null; status("Linking cancelled."); return true; }
  if (event.key !== "Enter" && event.key !== " ") return false;
  event.preventDefault();
  if (dot.classList.contains("ed-socket-out")) {
    ed.picked = { key: dot.dataset.key, type: dot.dataset.type };
    status(`Picked ${dot.dataset.key} (${dot.dataset.type}): press Enter on an input socket to link it, Escape to cancel.`);
    return true;
  }
  if (!ed.picked) { status("Pick an output socket first (Enter on it)."); return true; }
  const row = dot.closest(".ed-in");
  const { key, type } = ed.picked;
  const { ok, why } = linkVerdict(key, type, row);
  if (!ok) { status(`refused: ${why}`, true); return true; }
  ed.picked = null;
  const target = row.closest(".ed-node").dataset.id;
  change((doc) => { (doc.nodes[target].inputs ||= {})[row.dataset.input] = { from: key }; });
  status(`linked ${key} → ${target}.${row.dataset.input}`);
  return true;
}

function startLink(event, out, detach = null) {
  const svg = $("ed-links");
  const held = detach && svg.querySelector(`[data-link="${CSS.escape(`${out.dataset.key}->${detach.node}.${detach.input}`)}"]`);
  if (held) held.style.display = "none";
  const sourceType = out.dataset.type;
  const key = out.dataset.key;
  const start = socketPoint(out);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "path");
  line.classList.add("ed-link", "ed-dragging");
  line.setAttribute("stroke", portColour(sourceType));
  svg.append(line);
  let hovered = null;
  const verdict = (row) => linkVerdict(key, sourceType, row);
  const targetAt = (e) => {
    const under = document.elementFromPoint(e.clientX, e.clientY);
    return under ? under.closest(".ed-in") : null;
  };
  drag(event, (move) => {
    const canvas = $("ed-canvas").getBoundingClientRect();
    const point = { x: (move.clientX - canvas.left - ed.view.x) / ed.view.zoom, y: (move.clientY - canvas.top - ed.view.y) / ed.view.zoom };
    line.setAttribute("d", curve(start, point));
    const row = targetAt(move);
    if (hovered && hovered !== row) hovered.classList.remove("link-ok", "link-refused");
    hovered = row;
    if (row) {
      const { ok, why } = verdict(row);
      row.classList.toggle("link-ok", ok);
      row.classList.toggle("link-refused", !ok);
      line.classList.toggle("refused", !ok);
      status(ok ? `link ${why}` : `refused: ${why}`, !ok);
    } else line.classList.remove("refused");
  }, (up) => {
    line.remove();
    if (held) held.style.display = "";
    if (hovered) hovered.classList.remove("link-ok", "link-refused");
    const row = targetAt(up);
    const unlink = (doc) => { if (detach) delete doc.nodes[detach.node].inputs[detach.input]; };
    if (!row) {
      if (detach) { change(unlink); status(`removed the link ${key} → ${detach.node}.${detach.input}`); }
      return;
    }
    const { ok, why } = verdict(row);
    if (!ok) { status(`refused: ${why}`, true); return; }  // a picked-up link stays where it was
    const target = row.closest(".ed-node").dataset.id;
    change((doc) => { unlink(doc); (doc.nodes[target].inputs ||= {})[row.dataset.input] = { from: key }; });
    status(`linked ${key} → ${target}.${row.dataset.input}`);
  });
}

// -- palette -----------------------------------------------------------------------------

function renderPalette() {
  const list = $("ed-palette-list");
  list.replaceChildren();
  const query = $("ed-search").value.trim().toLowerCase();
  const byCategory = {};
  const entries = Object.values(ed.specs).filter((spec) => !spec.id.startsWith("graph:"));
  for (const graph of ed.graphs) entries.push({ id: `graph:${graph.name}`, category: "subgraph", description: graph.description || "" });
  for (const spec of entries) {
    const text = `${spec.id} ${spec.category} ${spec.description}`.toLowerCase();
    if (query && !query.split(/\s+/).every((word) => text.includes(word))) continue;
    (byCategory[spec.category] ||= []).push(spec);
  }
  for (const category of Object.keys(byCategory).sort()) {
    const group = document.createElement("div");
    group.className = "ed-category";
    const heading = document.createElement("h4");
    heading.textContent = category;
    group.append(heading);
    for (const spec of byCategory[category]) {
      const item = document.createElement("button");
      item.type = "button";
      item.className = "ed-palette-item";
      item.draggable = true;
      item.dataset.type = spec.id;
      item.textContent = spec.id;
      item.title = spec.description.split("\n")[0];
      item.addEventListener("dragstart", (e) => {
        e.dataTransfer.setData("application/x-sfumato-node", spec.id);
        e.dataTransfer.setData("text/plain", spec.id);
        e.dataTransfer.effectAllowed = "copy";
      });
      item.addEventListener("click", () => addAtCentre(spec.id));
      group.append(item);
    }
    list.append(group);
  }
  if (!list.children.length) {
    const none = document.createElement("p");
    none.className = "hint";
    none.textContent = "no node matches";
    list.append(none);
  }
}

function addAtCentre(type) {
  const canvas = $("ed-canvas");
  const count = Object.keys(ed.doc.nodes).length;
  const x = (canvas.clientWidth / 2 - ed.view.x) / ed.view.zoom - NODE_WIDTH / 2 + (count % 5) * 20;
  const y = (canvas.clientHeight / 3 - ed.view.y) / ed.view.zoom + (count % 5) * 20;
  addNode(type, { x, y });
}

function paletteKeys(event) {
  const items = [...$("ed-palette-list").querySelectorAll(".ed-palette-item")];
  const index = items.indexOf(document.activeElement);
  if (event.key === "ArrowDown") { event.preventDefault(); items[Math.min(items.length - 1, index + 1)]?.focus(); }
  else if (event.key === "ArrowUp") {
    event.preventDefault();
    if (index <= 0) $("ed-search").focus(); else items[index - 1].focus();
  } else if (event.key === "Enter" && event.target === $("ed-search") && items.length) {
    event.preventDefault();
    addAtCentre(items[0].dataset.type);
  }
}

// -- opening, saving, running ----------------------------------------------------------------

async function openShipped(name) {
  if (!name) return;
  try {
    const answer = await api(`/api/graphs/${encodeURIComponent(name)}`);
    await loadDocument(answer.document, `the graph ${name}`);
  } catch (error) { status(error.message, true); }
  $("ed-open-graph").value = "";
}

async function openFile(file) {
  if (!file) return;
  try {
    const head = new Uint8Array(await file.slice(0, 8).arrayBuffer());
    const isPng = head[0] === 0x89 && head[1] === 0x50 && head[2] === 0x4e && head[3] === 0x47;
    if (isPng) {
      const data = await api("/api/import-png", { method: "POST", headers: { "Content-Type": "image/png" }, body: file });
      const doc = typeof data.graph === "string" ? (await api(`/api/graphs/${encodeURIComponent(data.graph)}`)).document : data.graph;
      await loadDocument(doc, `the graph stored in ${file.name}`);
    } else {
      let doc;
      try { doc = JSON.parse(await file.text()); } catch (error) { throw new Error(`${file.name} is not JSON: ${error.message}`); }
      await loadDocument(doc, file.name);
    }
  } catch (error) {
    const issues = error.body && error.body.issues ? ": " + error.body.issues.map((i) => `${i.path}: ${i.message}`).join("; ") : "";
    status(`${error.message}${issues}`, true);
  }
  $("ed-open-file").value = "";
}

function save() {
  const blob = new Blob([documentText(ed.doc)], { type: "application/json" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `${(ed.doc.name || "graph").replace(/[^A-Za-z0-9_.-]+/g, "-")}.json`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  status(`Saved ${link.download}.`);
}

function setNodeState(id, state, text) {
  const element = nodeElementOf(id);
  if (!element) return;
  element.classList.remove("running", "done", "cached", "failed");
  if (state) element.classList.add(state);
  element.querySelector(".ed-state").textContent = text || "";
}

async function run() {
  $("ed-run").disabled = true;
  for (const id of Object.keys(ed.doc.nodes)) setNodeState(id, null, "");
  for (const img of $("ed-world").querySelectorAll(".ed-preview")) img.hidden = true;
  try {
    const job = await api("/api/jobs", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ graph: ordered(ed.doc) }),
    });
    status(`Job ${job.id} queued.`);
    follow(job.id);
  } catch (error) {
    $("ed-run").disabled = false;
    if (error.body && error.body.issues) { ed.issues = error.body.issues; paintIssues(); }
    status(`Not run: ${error.message}`, true);
  }
}

function follow(jobId) {
  if (ed.source) ed.source.close();
  const source = new EventSource(withToken(`/api/jobs/${jobId}/events`));
  ed.source = source;
  source.onmessage = async (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "node_started") setNodeState(event.node_id, "running", "running…");
    if (event.type === "node_finished") setNodeState(event.node_id, "done", `done ${event.seconds.toFixed(1)} s`);
    if (event.type === "node_cached") setNodeState(event.node_id, "cached", "cached");
    if (event.type === "node_failed") setNodeState(event.node_id, "failed", "failed");
    if (event.type === "node_failed" && event.error) {
      const line = document.createElement("li");
      line.textContent = event.error;
      nodeElementOf(event.node_id)?.querySelector(".ed-node-issues").append(line);
    }
    if (event.type === "node_progress") {
      setNodeState(event.node_id, "running", `step ${event.current}/${event.total}`);
      const img = nodeElementOf(event.node_id)?.querySelector(".ed-preview");
      if (img && event.preview) { img.src = event.preview; img.hidden = false; }
    }
    const ended = ["job_done", "job_failed", "job_cancelled"].includes(event.type)
      || (event.type === "status" && ["done", "failed", "cancelled"].includes(event.status));
    if (!ended) {
      if (event.type === "job_started") status(`Job ${jobId} is running…`);
      return;
    }
    source.close();
    $("ed-run").disabled = false;
    try {
      const job = await api(`/api/jobs/${jobId}`);
      showReport(job);
      if (job.status === "done") {
        status(`Job ${jobId} finished: ${job.outputs.filter((p) => p.endsWith(".png")).length} image(s) in the gallery.`);
        showSaved(job);
      } else status(`Job ${jobId} ${job.status}: ${(job.error || "").split("\n")[0]}`, true);
    } catch (error) { status(error.message, true); }
    loadGallery();
  };
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) { $("ed-run").disabled = false; status(`Lost the progress stream of job ${jobId}.`, true); }
  };
}

// Node states from the job's report: the event stream misses what ran before the page subscribed.
function showReport(job) {
  const runs = job.report && job.report.runs ? job.report.runs : [job.report];
  const states = { ran: "done", cached: "cached", failed: "failed", blocked: "failed", skipped: null };
  for (const run of runs) {
    for (const [id, record] of Object.entries((run && run.nodes) || {})) {
      const state = states[record.status];
      const text = record.status === "ran" ? `done ${Number(record.seconds).toFixed(1)} s` : record.status;
      if (state !== undefined) setNodeState(id, state, text);
      const list = nodeElementOf(id)?.querySelector(".ed-node-issues");
      if (record.error && list && !list.textContent.includes(record.error.split("\n")[0])) {
        const line = document.createElement("li");
        line.textContent = record.error.split("\n")[0];
        list.append(line);
      }
    }
  }
}

// The finished images, shown on the node that wrote them (image.save's "paths").
function showSaved(job) {
  const images = job.outputs.filter((p) => p.endsWith(".png"));
  if (!images.length) return;
  for (const [id, node] of Object.entries(ed.doc.nodes)) {
    if (node.type !== "image.save") continue;
    const img = nodeElementOf(id)?.querySelector(".ed-preview");
    if (img) { img.src = imageUrl(images[0]); img.alt = `first image saved by ${id}`; img.hidden = false; }
  }
}

// -- keyboard ----------------------------------------------------------------------------

function canvasKeys(event) {
  const ctrl = event.ctrlKey || event.metaKey;
  if (event.target.closest("input, textarea, select")) return;
  if (event.target.classList.contains("ed-socket") && socketKeys(event)) return;
  if (ctrl && event.key.toLowerCase() === "z") { event.preventDefault(); if (event.shiftKey) restore(ed.redo, ed.undo); else restore(ed.undo, ed.redo); }
  else if (ctrl && event.key.toLowerCase() === "y") { event.preventDefault(); restore(ed.redo, ed.undo); }
  else if (ctrl && event.key.toLowerCase() === "c") { event.preventDefault(); copySelection(); }
  else if (ctrl && event.key.toLowerCase() === "v") { event.preventDefault(); paste(); }
  else if (ctrl && event.key.toLowerCase() === "a") { event.preventDefault(); ed.selected = new Set(Object.keys(ed.doc.nodes)); paintSelection(); }
  else if (event.key === "Delete" || event.key === "Backspace") { event.preventDefault(); removeNodes(new Set(ed.selected)); }
  else if (event.key === "+" || event.key === "=") { const c = $("ed-canvas"); zoomAt(1.2, c.clientWidth / 2, c.clientHeight / 2); }
  else if (event.key === "-") { const c = $("ed-canvas"); zoomAt(1 / 1.2, c.clientWidth / 2, c.clientHeight / 2); }
  else if (event.key === "0") fitView();
  else if (event.key === "/") { event.preventDefault(); $("ed-search").focus(); }
  else if (event.key === "F2" && event.target.classList.contains("ed-node")) { event.preventDefault(); editId(event.target.dataset.id); }
}

// -- start -------------------------------------------------------------------------------

async function start() {
  const [nodes, ports, models, graphs] = await Promise.all([
    api("/api/nodes"), api("/api/ports"), api("/api/models"), api("/api/graphs")]);
  ed.specs = Object.fromEntries(nodes.map((spec) => [spec.id, spec]));
  ed.ports = ports;
  ed.models = models;
  ed.graphs = graphs;
  for (const graph of graphs) $("ed-open-graph").append(new Option(graph.name, graph.name));
  renderPalette();
  render();
  const canvas = $("ed-canvas");
  canvas.addEventListener("pointerdown", onPointerDown);
  canvas.addEventListener("dblclick", (event) => {
    const title = event.target.closest(".ed-node header strong");
    if (title) editId(title.closest(".ed-node").dataset.id);
  });
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    const box = canvas.getBoundingClientRect();
    zoomAt(event.deltaY < 0 ? 1.1 : 1 / 1.1, event.clientX - box.left, event.clientY - box.top);
  }, { passive: false });
  canvas.addEventListener("dragover", (event) => { event.preventDefault(); event.dataTransfer.dropEffect = "copy"; });
  canvas.addEventListener("drop", (event) => {
    event.preventDefault();
    const type = event.dataTransfer.getData("application/x-sfumato-node") || event.dataTransfer.getData("text/plain");
    if (event.dataTransfer.files && event.dataTransfer.files[0]) return openFile(event.dataTransfer.files[0]);
    if (!ed.specs[type] && !type.startsWith("graph:")) return;
    const box = canvas.getBoundingClientRect();
    addNode(type, { x: (event.clientX - box.left - ed.view.x) / ed.view.zoom - 20, y: (event.clientY - box.top - ed.view.y) / ed.view.zoom - 14 });
  });
  $("editor").addEventListener("keydown", (event) => {
    if (event.target.closest(".ed-palette")) paletteKeys(event);
    else if (event.target.closest("#ed-canvas")) canvasKeys(event);
  });
  $("ed-search").addEventListener("input", renderPalette);
  $("ed-new").addEventListener("click", () => loadDocument(emptyDoc(), "a new graph"));
  $("ed-open-graph").addEventListener("change", () => openShipped($("ed-open-graph").value));
  $("ed-open-file").addEventListener("change", () => openFile($("ed-open-file").files[0]));
  $("ed-name").addEventListener("change", () => change((doc) => { doc.name = $("ed-name").value.trim(); }));
  $("ed-save").addEventListener("click", save);
  $("ed-undo").addEventListener("click", () => restore(ed.undo, ed.redo));
  $("ed-redo").addEventListener("click", () => restore(ed.redo, ed.undo));
  $("ed-zoom-in").addEventListener("click", () => zoomAt(1.2, canvas.clientWidth / 2, canvas.clientHeight / 2));
  $("ed-zoom-out").addEventListener("click", () => zoomAt(1 / 1.2, canvas.clientWidth / 2, canvas.clientHeight / 2));
  $("ed-fit").addEventListener("click", fitView);
  $("ed-run").addEventListener("click", run);
  $("ed-param-form").addEventListener("submit", promote);
  $("ed-param-cancel").addEventListener("click", () => $("ed-param-dialog").close());
  window.addEventListener("resize", drawLinks);
  $("editor").dataset.ready = "true";
}

start().catch((error) => status("The editor cannot start: " + error.message, true));
