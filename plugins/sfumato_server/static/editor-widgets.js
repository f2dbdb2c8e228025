// Form controls of the graph editor: a node input's widget from its JSON Schema, a graph
// parameter's from its declaration, and a colour per port type. `set(undefined)` removes a value.

const PORT_COLOURS = {
  Text: "#d9a400", TextList: "#b7791f", Int: "#2f855a", Float: "#38a169", Bool: "#805ad5", JSON: "#718096",
  Images: "#3182ce", Embedding: "#d53f8c", Conditioning: "#e53e3e", Latent: "#dd6b20", Retrieved: "#319795",
  PromptWeights: "#975a16", Any: "#a0aec0",
};

/** The colour of a port type: fixed for the built-in ones, from the name for plugins' types. */
export function portColour(type) {
  if (PORT_COLOURS[type]) return PORT_COLOURS[type];
  let hash = 0;
  for (const c of type) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  return `hsl(${hash % 360} 55% 45%)`;
}

function choiceSelect(choices, shown, set) {
  const control = document.createElement("select");
  for (const choice of choices) control.append(new Option(String(choice), JSON.stringify(choice)));
  control.value = JSON.stringify(shown);
  control.addEventListener("change", () => set(JSON.parse(control.value)));
  return control;
}

function checkbox(shown, set) {
  const control = document.createElement("input");
  control.type = "checkbox";
  control.checked = Boolean(shown);
  control.addEventListener("change", () => set(control.checked));
  return control;
}

// Any other JSON: written as JSON text; text that is not JSON stays a string.
function jsonText(shown, set) {
  const control = document.createElement("input");
  control.type = "text";
  control.value = shown === undefined || shown === null ? "" : JSON.stringify(shown);
  control.addEventListener("change", () => {
    const text = control.value.trim();
    if (text === "") return set(undefined);
    try { set(JSON.parse(text)); } catch { set(control.value); }
  });
  return control;
}

// `model`: a choice among the server's models, by kind (plus a folder named in the file).
function modelPicker(models, shown, set) {
  const control = document.createElement("select");
  const known = new Set(models.map((m) => m.name));
  for (const kind of [...new Set(models.map((m) => m.kind))]) {
    const group = document.createElement("optgroup");
    group.label = kind;
    for (const model of models.filter((m) => m.kind === kind)) group.append(new Option(model.name, model.name));
    control.append(group);
  }
  if (shown && !known.has(shown)) control.append(new Option(shown, shown));
  control.value = shown ?? "";
  control.addEventListener("change", () => set(control.value));
  return control;
}

/**
 * The control for a literal input, built from its JSON Schema (`schema`: the literal branch of
 * the input's anyOf): choices, numbers with their range, booleans, text, lists of text, models.
 */
export function widgetFor(fieldId, input, schema, value, set, models) {
  const shown = value !== undefined ? value : input.default;
  let control;
  if (Array.isArray(schema.enum)) control = choiceSelect(schema.enum, shown, set);
  else if (schema.type === "boolean") control = checkbox(shown, set);
  else if (schema.type === "integer" || schema.type === "number") {
    control = document.createElement("input");
    control.type = "number";
    control.step = schema.type === "integer" ? "1" : "any";
    const low = schema.minimum ?? schema.exclusiveMinimum, high = schema.maximum ?? schema.exclusiveMaximum;
    if (low !== undefined) control.min = low;
    if (high !== undefined) control.max = high;
    control.value = shown ?? "";
    control.placeholder = input.required ? "required" : "";
    control.addEventListener("change", () => {
      const text = control.value.trim();
      set(text === "" ? undefined : Number(text));
    });
  } else if (schema.type === "string" && input.name === "model" && models.length) control = modelPicker(models, shown, set);
  else if (schema.type === "string") {
    const long = /prompt|text|template|caption/.test(input.name);
    control = document.createElement(long ? "textarea" : "input");
    if (!long) control.type = "text";
    control.value = shown ?? "";
    control.placeholder = input.required ? "required" : "";
    control.addEventListener("change", () => set(control.value));
  } else if (schema.type === "array" && schema.items && schema.items.type === "string") {
    control = document.createElement("textarea");
    control.value = Array.isArray(shown) ? shown.join("\n") : (shown ?? "");
    control.placeholder = "one per line";
    control.addEventListener("change", () => {
      const lines = control.value.split("\n").filter((line) => line.trim() !== "");
      set(control.value.trim() === "" && !input.required ? undefined : lines);
    });
  } else control = jsonText(shown, set);
  control.id = fieldId;
  control.className = "ed-widget";
  if (input.description) control.title = input.description;
  // Typing in a widget must not drag the node or delete it.
  control.addEventListener("pointerdown", (event) => event.stopPropagation());
  control.addEventListener("keydown", (event) => event.stopPropagation());
  return control;
}

/** The control for a graph parameter's default, from its declaration (type, choices, range). */
export function paramControl(declaration, set) {
  const value = declaration.default;
  if (Array.isArray(declaration.choices)) return choiceSelect(declaration.choices, value, set);
  if (declaration.type === "bool") return checkbox(value, set);
  if (declaration.type === "str") {
    const control = document.createElement("input");
    control.type = "text";
    control.value = value ?? "";
    control.addEventListener("change", () => set(control.value));
    return control;
  }
  if (declaration.type !== "int" && declaration.type !== "float") {
    const control = jsonText(value, set);
    control.placeholder = "required";
    return control;
  }
  const control = document.createElement("input");
  control.type = "number";
  control.step = declaration.type === "int" ? "1" : "any";
  if (declaration.minimum != null) control.min = declaration.minimum;
  if (declaration.maximum != null) control.max = declaration.maximum;
  control.value = value ?? "";
  control.placeholder = "required";
  control.addEventListener("change", () => {
    const text = control.value.trim();
    set(text === "" ? undefined : Number(text));
  });
  return control;
}
