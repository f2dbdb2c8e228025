// sfumato web page: plain JavaScript, no build step, no external resources.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const state = { graphs: [], models: [], current: null, job: null, source: null, lastDetail: null };
const $ = (id) => document.getElementById(id);

function withToken(url) {
  if (!token) return url;
  return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
}

async function api(path, options = {}) {
  const response = await fetch(withToken(path), options);
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const error = new Error(body.error || body.detail || response.statusText);
    error.body = body;
    throw error;
  }
  return body;
}

function fieldFor(name, spec, value) {
  const wrap = document.createElement("div");
  const id = "param-" + name;
  const label = document.createElement("label");
  label.htmlFor = id;
  label.textContent = name.replace(/_/g, " ");
  wrap.append(label);
  let input;
  if (spec.choices) {
    input = document.createElement("select");
    for (const choice of spec.choices) input.append(new Option(choice, choice));
  } else if (spec.type === "bool") {
    input = document.createElement("input");
    input.type = "checkbox";
  } else if (spec.type === "int" || spec.type === "float") {
    input = document.createElement("input");
    input.type = "number";
    input.step = spec.type === "int" ? "1" : "any";
    if (spec.minimum !== undefined) input.min = spec.minimum;
    if (spec.maximum !== undefined) input.max = spec.maximum;
  } else if (name === "model" && state.models.length) {
    return modelField(wrap, id, spec, value);
  } else if (name.includes("prompt")) {
    input = document.createElement("textarea");
  } else {
    input = document.createElement("input");
    input.type = "text";
  }
  input.id = id;
  input.name = name;
  input.dataset.type = spec.type;
  const initial = value !== undefined ? value : spec.default;
  if (spec.type === "bool") input.checked = Boolean(initial);
  else if (initial !== undefined && initial !== null) {
    input.value = Array.isArray(initial) && spec.type.startsWith("list[") ? initial.join(", ")
      : typeof initial === "object" ? JSON.stringify(initial) : initial;
  }
  wrap.append(input);
  if (spec.description) {
    const hint = document.createElement("p");
    hint.className = "hint";
    hint.id = id + "-hint";
    hint.textContent = spec.description;
    input.setAttribute("aria-describedby", hint.id);
    wrap.append(hint);
  }
  return wrap;
}

// `model`: a choice among the server's models (its own kind first), or "a model folder..." with a path field.
function modelField(wrap, id, spec, value) {
  const initial = value !== undefined ? value : (spec.default ?? "");
  const select = document.createElement("select");
  select.id = id;
  select.name = "model";
  select.dataset.type = spec.type;
  const kindOf = Object.fromEntries(state.models.map((m) => [m.name, m.kind]));
  const firstKind = kindOf[spec.default];
  const kinds = [...new Set(state.models.map((m) => m.kind))].sort((a, b) => (b === firstKind) - (a === firstKind));
  for (const kind of kinds) {
    const group = document.createElement("optgroup");
    group.label = kind;
    for (const model of state.models.filter((m) => m.kind === kind)) group.append(new Option(model.name, model.name));
    select.append(group);
  }
  select.append(new Option("a model folder…", ""));
  const path = document.createElement("input");
  path.type = "text";
  path.id = id + "-path";
  path.placeholder = "path to a model folder";
  path.setAttribute("aria-label", "model folder");
  const known = initial in kindOf;
  select.value = known ? initial : "";
  path.value = known ? "" : initial;
  path.hidden = known;
  select.addEventListener("change", () => { path.hidden = select.value !== ""; if (!path.hidden) path.focus(); });
  wrap.append(select, path);
  if (spec.description) {
    const hint = document.createElement("p");
    hint.className = "hint";
    hint.id = id + "-hint";
    hint.textContent = spec.description;
    select.setAttribute("aria-describedby", hint.id);
    wrap.append(hint);
  }
  return wrap;
}

function showGraph(name, values = {}) {
  const graph = state.graphs.find((g) => g.name === name) || state.graphs[0];
  if (!graph) return;
  state.current = graph;
  $("graph-select").value = graph.name;
  $("graph-description").textContent = graph.description || "";
  const fields = $("param-fields");
  fields.replaceChildren();
  for (const [param, spec] of Object.entries(graph.params)) fields.append(fieldFor(param, spec, values[param]));
}

// Typed JSON values, as the API takes them; a blank field is left out (its default, or "required").
function typedValue(input) {
  const type = input.dataset.type;
  if (input.type === "checkbox") return input.checked;
  let text = input.value;
  if (input.name === "model" && input.tagName === "SELECT" && text === "") text = $(input.id + "-path").value;
  if (text.trim() === "") return undefined;
  if (type === "int") return Number.isInteger(Number(text)) ? Number(text) : text;
  if (type === "float") return Number.isFinite(Number(text)) ? Number(text) : text;
  if (type === "list[str]") return text.trim().startsWith("[") ? JSON.parse(text) : text.split(",").map((s) => s.trim()).filter(Boolean);
  if (type === "list[int]" || type === "list[float]") return text.trim().startsWith("[") ? JSON.parse(text) : text.split(",").map((s) => Number(s.trim()));
  if (type === "json") { try { return JSON.parse(text); } catch { return text; } }
  return text;
}

function formValues() {
  const values = {};
  for (const input of $("param-fields").querySelectorAll("input[name], select[name], textarea[name]")) {
    const value = typedValue(input);
    if (value !== undefined) values[input.name] = value;
  }
  return values;
}

function setStatus(text) { $("status").textContent = text; $("job-error").textContent = ""; }

// The run is over (done, failed or cancelled): the form is usable again.
function runEnded() {
  $("run-button").disabled = false;
  $("cancel-button").hidden = true;
  $("step-bar").hidden = true;
  $("preview").hidden = true;
}

function nodeItem(nodeId) {
  let item = document.getElementById("node-" + nodeId);
  if (!item) {
    item = document.createElement("li");
    item.id = "node-" + nodeId;
    item.textContent = nodeId;
    $("node-list").append(item);
  }
  return item;
}

function follow(jobId) {
  if (state.source) state.source.close();
  $("node-list").replaceChildren();
  $("result").replaceChildren();
  const bar = $("step-bar");
  const source = new EventSource(withToken(`/api/jobs/${jobId}/events`));
  state.source = source;
  source.onmessage = async (message) => {
    const event = JSON.parse(message.data);
    const ended = ["job_done", "job_failed", "job_cancelled"].includes(event.type)
      || (event.type === "status" && ["done", "failed", "cancelled"].includes(event.status));
    if (!ended && (event.type === "status" || event.type === "job_queued")) setStatus(`Job ${jobId} is ${event.status || "queued"}.`);
    if (event.type === "job_started") setStatus(`Job ${jobId} is running…`);
    if (event.type === "node_started") { nodeItem(event.node_id).textContent = `${event.node_id}: running`; }
    if (event.type === "node_finished") { const li = nodeItem(event.node_id); li.className = "ran"; li.textContent = `${event.node_id}: done in ${event.seconds.toFixed(2)} s`; bar.hidden = true; }
    if (event.type === "node_cached") { const li = nodeItem(event.node_id); li.className = "cached"; li.textContent = `${event.node_id}: reused from cache`; }
    if (event.type === "node_failed") { const li = nodeItem(event.node_id); li.className = "failed"; li.textContent = `${event.node_id}: failed: ${event.error}`; }
    if (event.type === "node_progress" && event.preview) { $("preview").src = event.preview; $("preview").hidden = false; }
    if (event.type === "node_progress") { bar.hidden = false; bar.max = event.total; bar.value = event.current; setStatus(`Job ${jobId}: ${event.node_id} step ${event.current} of ${event.total}`); }
    if (ended) {
      source.close();
      runEnded();
      try {
        showResult(await api(`/api/jobs/${jobId}`));
      } catch (error) {
        showFailure(jobId, event.status || event.type.replace("job_", ""), event.error || error.message);
      }
      loadGallery();
    }
  };
  source.onerror = () => {
    // The stream broke (server restarted, network): say so and let the user run again.
    if (source.readyState === EventSource.CLOSED) { runEnded(); setStatus(`Lost the progress stream of job ${jobId}.`); }
  };
}

function showFailure(jobId, status, error) {
  setStatus(`Job ${jobId} ${status}${error ? ":" : "."}`);
  $("job-error").textContent = error || "";
  $("status").scrollIntoView({ block: "nearest" });
}

function imageUrl(path) { return withToken("/api/files/" + path.split("/").map(encodeURIComponent).join("/")); }

function showResult(job) {
  const result = $("result");
  result.replaceChildren();
  if (job.status !== "done") {
    showFailure(job.id, job.status, job.error ? job.error.split("\n")[0] : "");
    return;
  }
  setStatus(`Job ${job.id} finished in ${job.seconds ? job.seconds.toFixed(1) : "?"} s.`);
  const fidelity = fidelityText(job);
  if (fidelity) {
    const score = document.createElement("p");
    score.id = "fidelity";
    score.textContent = `Prompt fidelity (the judge's score, 0 to 1): ${fidelity}`;
    result.append(score);
  }
  for (const path of job.outputs.filter((p) => p.endsWith(".png"))) {
    const img = document.createElement("img");
    img.src = imageUrl(path);
    img.alt = `result of job ${job.id}: ${job.params.prompt || job.graph}`;
    result.append(img);
  }
  const params = document.createElement("p");
  params.className = "hint";
  params.textContent = Object.entries(job.params)
    .map(([k, v]) => `${k} = ${typeof v === "string" ? v : JSON.stringify(v)}`).join(" · ");
  result.append(params);
}

// The graph's "fidelity" output (the judge's prompt-match score), as text: a number, a list of
// numbers, or the judge's summary object ({all, colour, shape, background, count}).
function fidelityText(job) {
  const runs = job.report?.runs ? job.report.runs : [job.report];
  const parts = [];
  for (const run of runs) {
    const value = run?.outputs?.fidelity;
    if (typeof value === "number") parts.push(value.toFixed(2));
    else if (Array.isArray(value)) parts.push(value.filter((v) => typeof v === "number").map((v) => v.toFixed(2)).join(", "));
    else if (value && typeof value === "object") {
      const score = typeof value.all === "number" ? value.all.toFixed(2) : "";
      const detail = Object.entries(value).filter(([k, v]) => k !== "all" && k !== "count" && typeof v === "number")
        .map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ");
      parts.push(`${score}${detail ? ` (${detail}${value.count ? `; ${value.count} images` : ""})` : ""}`);
    }
  }
  return parts.filter(Boolean).join("; ");
}

async function submit(event) {
  event.preventDefault();
  $("form-errors").textContent = "";
  $("run-button").disabled = true;
  try {
    const job = await api("/api/jobs", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ graph: state.current.name, params: formValues() }),
    });
    state.job = job.id;
    $("cancel-button").hidden = false;
    setStatus(`Job ${job.id} queued.`);
    // Keep the status in view: on a short window the progress panel is below the form.
    $("status").scrollIntoView({ block: "nearest", behavior: "smooth" });
    follow(job.id);
  } catch (error) {
    $("run-button").disabled = false;
    const issues = error.body && error.body.issues ? error.body.issues.map((i) => `${i.path}: ${i.message}`).join("\n") : "";
    $("form-errors").textContent = `${error.message}${issues ? "\n" + issues : ""}`;
  }
}

async function loadGallery() {
  const { jobs } = await api("/api/jobs?status=done&limit=60");
  const gallery = $("gallery");
  gallery.replaceChildren();
  for (const job of jobs) {
    const image = job.outputs.find((p) => p.endsWith(".png"));
    if (!image) continue;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "thumb";
    const img = document.createElement("img");
    img.src = imageUrl(image);
    img.alt = "";
    const caption = document.createElement("span");
    caption.textContent = `#${job.id} ${job.params.prompt || job.graph}`;
    button.append(img, caption);
    button.setAttribute("aria-label", `job ${job.id}: ${job.params.prompt || job.graph}`);
    button.addEventListener("click", () => openDetail(job.id));
    gallery.append(button);
  }
  if (!gallery.children.length) {
    const empty = document.createElement("p");
    empty.className = "hint empty";
    empty.textContent = "No results yet: run a workflow above.";
    gallery.append(empty);
  }
}

// Make the drawing scale with the dialog: a viewBox from its own size, the size from CSS.
function fitDrawing(svg) {
  if (!svg || svg.hasAttribute("viewBox")) return;
  const width = parseFloat(svg.getAttribute("width")), height = parseFloat(svg.getAttribute("height"));
  if (!(width > 0 && height > 0)) return;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.removeAttribute("width");
  svg.removeAttribute("height");
}

async function openDetail(jobId) {
  const job = await api(`/api/jobs/${jobId}`);
  state.lastDetail = job;
  $("detail-title").textContent = `Job ${job.id}: ${job.graph}`;
  const images = $("detail-images");
  images.replaceChildren();
  for (const path of job.outputs.filter((p) => p.endsWith(".png"))) {
    const img = document.createElement("img");
    img.src = imageUrl(path);
    img.alt = `image of job ${job.id}`;
    images.append(img);
  }
  const table = $("detail-params");
  table.replaceChildren();
  for (const [key, value] of Object.entries(job.params)) {
    const row = table.insertRow();
    row.insertCell().textContent = key;
    row.insertCell().textContent = typeof value === "string" ? value : JSON.stringify(value);
  }
  const fidelity = fidelityText(job);
  if (fidelity) {
    const row = table.insertRow();
    row.insertCell().textContent = "fidelity";
    row.insertCell().textContent = fidelity;
  }
  try {
    const graph = await api(`/api/graphs/${encodeURIComponent(job.graph)}`);
    $("detail-graph").innerHTML = graph.svg;  // drawn by the server from the graph file
    fitDrawing($("detail-graph").querySelector("svg"));
  } catch { $("detail-graph").textContent = "(graph not in this server's graph folder)"; }
  $("detail").showModal();
}

async function runAgain(edit) {
  const job = state.lastDetail;
  $("detail").close();
  showGraph(job.graph, job.params);
  if (edit) { $("param-fields").querySelector("textarea, input, select")?.focus(); return; }
  $("run-form").requestSubmit();
}

async function dropped(file) {
  try {
    const data = await api("/api/import-png", { method: "POST", headers: { "Content-Type": "image/png" }, body: file });
    if (typeof data.graph !== "string") throw new Error("this image's workflow is not one of this server's graphs");
    showGraph(data.graph, data.params);
    setStatus(`Loaded the settings of ${file.name}. Press Run to make it again.`);
  } catch (error) { $("form-errors").textContent = error.message; }
}

async function start() {
  state.graphs = await api("/api/graphs");
  state.models = await api("/api/models");
  const select = $("graph-select");
  for (const graph of state.graphs) select.append(new Option(graph.name, graph.name));
  select.addEventListener("change", () => showGraph(select.value));
  showGraph(state.graphs.some((g) => g.name === "text-to-image") ? "text-to-image" : state.graphs[0]?.name);
  $("run-form").addEventListener("submit", submit);
  $("cancel-button").addEventListener("click", () => state.job && api(`/api/jobs/${state.job}/cancel`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" }));
  $("run-again").addEventListener("click", () => runAgain(false));
  $("edit-run").addEventListener("click", () => runAgain(true));
  $("close-detail").addEventListener("click", () => $("detail").close());
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); if (e.dataTransfer.files[0]) dropped(e.dataTransfer.files[0]); });
  loadGallery();
}

start().catch((error) => { $("form-errors").textContent = "Cannot reach the server: " + error.message; });
