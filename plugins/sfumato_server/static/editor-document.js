// The graph file format, as the graph editor reads and writes it: plain functions over the JSON
// document (no page, no state), so what the editor saves is exactly what the engine loads.
// The rules mirror core/sfumato/graph/document.py (inputs, key order) and subgraph.py (graph:NAME).

/** A graph with no nodes yet. */
export function emptyDoc() { return { version: 1, name: "untitled", nodes: {} }; }

export function clone(value) { return JSON.parse(JSON.stringify(value)); }

/** An input's raw JSON as {kind: "link"|"param"|"input"|"value", ...}, the way the engine reads it (parse_input). */
export function inputRef(raw) {
  if (raw && typeof raw === "object" && !Array.isArray(raw)) {
    const keys = Object.keys(raw);
    if (keys.length === 1 && keys[0] === "from" && typeof raw.from === "string") {
      const at = raw.from.lastIndexOf(".");
      return { kind: "link", node: raw.from.slice(0, at), output: raw.from.slice(at + 1) };
    }
    if (keys.length === 1 && keys[0] === "param") return { kind: "param", name: raw.param };
    if (keys.length === 1 && keys[0] === "input") return { kind: "input", name: raw.input };
    if (keys.length === 1 && keys[0] === "value") return { kind: "value", value: raw.value };
  }
  return { kind: "value", value: raw };
}

/** A literal written so the engine reads it back as a literal (Value.as_json). */
export function literalJSON(value) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    const keys = Object.keys(value);
    if (keys.length === 1 && ["from", "param", "input", "value"].includes(keys[0])) return { value };
  }
  return value;
}

/** The document in the file's key order (Graph.to_dict): saving an opened graph gives it back unchanged. */
export function ordered(doc) {
  const out = {};
  for (const key of ["version", "name", "description", "params", "inputs", "nodes", "outputs"]) if (key in doc) out[key] = doc[key];
  for (const key of Object.keys(doc)) if (!(key in out)) out[key] = doc[key];
  const nodes = {};
  for (const [id, node] of Object.entries(doc.nodes || {})) {
    const entry = {};
    for (const key of ["type", "version", "inputs", "title", "meta"]) if (key in node) entry[key] = node[key];
    for (const key of Object.keys(node)) if (!(key in entry)) entry[key] = node[key];
    nodes[id] = entry;
  }
  out.nodes = nodes;
  return out;
}

/** The file's text, as Graph.to_json writes it. */
export function documentText(doc) { return JSON.stringify(ordered(doc), null, 2) + "\n"; }

/** A node's stored position (meta.pos = [x, y]), or null. */
export function metaPos(node) {
  const pos = node.meta && node.meta.pos;
  return Array.isArray(pos) && pos.length === 2 && pos.every(Number.isFinite) ? { x: pos[0], y: pos[1] } : null;
}

/** Each node's column, left to right by dependency: one past its deepest upstream node. */
export function dependencyDepths(nodes) {
  const depth = {};
  const visiting = new Set();
  const depthOf = (id) => {
    if (id in depth) return depth[id];
    if (visiting.has(id) || !(id in nodes)) return 0;  // a cycle (validation reports it) or a dangling link
    visiting.add(id);
    let d = 0;
    for (const raw of Object.values(nodes[id].inputs || {})) {
      const ref = inputRef(raw);
      if (ref.kind === "link" && ref.node in nodes) d = Math.max(d, depthOf(ref.node) + 1);
    }
    visiting.delete(id);
    depth[id] = d;
    return d;
  };
  for (const id of Object.keys(nodes)) depthOf(id);
  return depth;
}

/** Remove nodes, with the inputs and graph outputs that named them. */
export function removeFromDocument(doc, ids) {
  for (const id of ids) delete doc.nodes[id];
  for (const node of Object.values(doc.nodes)) {
    for (const [name, raw] of Object.entries(node.inputs || {})) {
      const ref = inputRef(raw);
      if (ref.kind === "link" && ids.has(ref.node)) delete node.inputs[name];
    }
  }
  for (const [name, target] of Object.entries(doc.outputs || {})) {
    if (ids.has(target.slice(0, target.lastIndexOf(".")))) delete doc.outputs[name];
  }
}

/** Give a node a new id in place (same position in the file); links from it and graph outputs follow. */
export function renameInDocument(doc, oldId, newId) {
  const renamed = {};
  for (const [id, node] of Object.entries(doc.nodes)) renamed[id === oldId ? newId : id] = node;
  doc.nodes = renamed;
  for (const node of Object.values(doc.nodes)) {
    for (const [name, raw] of Object.entries(node.inputs || {})) {
      const ref = inputRef(raw);
      if (ref.kind === "link" && ref.node === oldId) node.inputs[name] = { from: `${newId}.${ref.output}` };
    }
  }
  for (const [name, target] of Object.entries(doc.outputs || {})) {
    const at = target.lastIndexOf(".");
    if (target.slice(0, at) === oldId) doc.outputs[name] = `${newId}${target.slice(at)}`;
  }
}

/** Port type -> graph parameter type, for promoting an input to a parameter. */
export const PARAM_TYPES = { Text: "str", Int: "int", Float: "float", Bool: "bool", TextList: "list[str]", JSON: "json" };
/** Graph parameter type -> port type (PARAM_PORTS in graph/params.py). */
const PARAM_PORTS = { str: "Text", int: "Int", float: "Float", bool: "Bool", "list[str]": "TextList", "list[int]": "JSON", "list[float]": "JSON", json: "Any" };
const PARAM_SCHEMAS = { str: { type: "string" }, int: { type: "integer" }, float: { type: "number" }, bool: { type: "boolean" },
  "list[str]": { type: "array", items: { type: "string" } }, "list[int]": { type: "array", items: { type: "integer" } },
  "list[float]": { type: "array", items: { type: "number" } }, json: {} };

/**
 * The node type of a graph used as a node ("type": "graph:NAME"), as the engine gives it
 * (graph_type_spec): its params are literal inputs, its declared inputs are link inputs, its
 * outputs are typed by the inner nodes that make them (`specs`: node type id -> /api/nodes entry).
 */
export function subgraphSpec(type, doc, specs) {
  const inputs = [], properties = {};
  for (const [name, declaration] of Object.entries(doc.params || {})) {
    const required = declaration.required || declaration.default === undefined || declaration.default === null;
    inputs.push({ name, type: PARAM_PORTS[declaration.type] || "Any", required, default: required ? null : declaration.default,
      description: declaration.description || "" });
    const literal = { ...PARAM_SCHEMAS[declaration.type] };
    if (Array.isArray(declaration.choices)) literal.enum = declaration.choices;
    if (declaration.minimum != null) literal.minimum = declaration.minimum;
    if (declaration.maximum != null) literal.maximum = declaration.maximum;
    properties[name] = { anyOf: [{ link: true }, { param: true }, literal] };
  }
  for (const [name, declaration] of Object.entries(doc.inputs || {})) {
    inputs.push({ name, type: declaration.type, required: true, default: null, description: declaration.description || "" });
    properties[name] = { anyOf: [{ link: true }, { param: true }] };
  }
  const outputs = Object.entries(doc.outputs || {}).map(([name, target]) => {
    const at = target.lastIndexOf(".");
    const inner = doc.nodes[target.slice(0, at)];
    const spec = inner && specs[inner.type];
    const port = spec && spec.outputs.find((o) => o.name === target.slice(at + 1));
    return { name, type: port ? port.type : "Any", description: "" };
  });
  return { id: type, category: "subgraph", description: doc.description || "", inputs, outputs,
    input_schema: { properties }, subgraph: Object.keys(doc.nodes || {}).length };
}
