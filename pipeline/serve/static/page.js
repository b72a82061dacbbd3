"use strict";
// The page of `nmt serve`: languages from /languages, translations (with n-best and the
// attention matrix) from our POST /translate. Plain script, no build step, no network
// besides this server, so it works offline.

const $ = (id) => document.getElementById(id);
const KEY_STORE = "nmt-serve-api-key";
const CELL = 16; // pixels per attention cell
let languages = [];
let limits = { beam_size: 5, max_beam_size: 16 }; // replaced by /model's when it answers

function headers() {
  const result = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) result.Authorization = "Bearer " + key;
  return result;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

async function call(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers() });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    // not JSON: the status line says what happened
  }
  if (!response.ok) {
    const message = body && (body.error || body.detail);
    throw new Error(message ? String(message) : `${response.status} ${response.statusText}`);
  }
  return body;
}

function nameOf(code) {
  const language = languages.find((l) => l.code === code);
  return language ? `${language.name} (${code})` : code;
}

async function loadLanguages() {
  languages = await call("languages");
  const source = $("source");
  for (const language of languages.filter((l) => l.targets.length)) {
    source.add(new Option(nameOf(language.code), language.code));
  }
  fillTargets();
}

async function loadLimits() {
  try {
    limits = (await call("model")).limits;
  } catch (_) {
    // without the key /model answers 401; the defaults above serve until a key is typed
  }
}

function fillTargets() {
  const source = $("source").value;
  const targets =
    source === "auto"
      ? [...new Set(languages.flatMap((l) => l.targets))].sort()
      : languages.find((l) => l.code === source).targets;
  const target = $("target");
  const previous = target.value;
  target.innerHTML = "";
  for (const code of targets) target.add(new Option(nameOf(code), code));
  if (targets.includes(previous)) target.value = previous;
}

function requestBody(lines) {
  const alternatives = Number($("alternatives").value);
  const body = {
    text: lines,
    source: $("source").value,
    target: $("target").value,
    return_attention: $("show-attention").checked,
  };
  if (alternatives > 0) {
    body.n_best = alternatives + 1;
    body.beam_size = Math.min(Math.max(body.n_best, limits.beam_size), limits.max_beam_size);
  }
  const glossary = glossaryOf($("glossary").value);
  if (glossary) body.glossary = glossary;
  const prefix = $("prefix").value.trim();
  if (prefix) body.target_prefix = prefix;
  if ($("sample").checked) {
    // n_best distinct samples; a fresh seed each time, so asking again gives other replies
    body.sample = true;
    body.temperature = Number($("temperature").value);
    body.top_p = Number($("top-p").value);
  }
  return body;
}

// "Hund=dog; Katze=cat" -> {Hund: "dog", Katze: "cat"}; the server refuses empty terms.
function glossaryOf(text) {
  const pairs = text.split(";").map((p) => p.trim()).filter(Boolean);
  if (!pairs.length) return null;
  return Object.fromEntries(
    pairs.map((pair) => {
      const at = pair.indexOf("=");
      return at < 0 ? [pair, ""] : [pair.slice(0, at).trim(), pair.slice(at + 1).trim()];
    }),
  );
}

async function translate() {
  clearError();
  const lines = $("text").value.split("\n").map((l) => l.trim()).filter(Boolean);
  if (!lines.length) {
    showError("Type a text to translate.");
    return;
  }
  const button = $("translate");
  button.disabled = true;
  $("status").textContent = "Translating…";
  try {
    const body = JSON.stringify(requestBody(lines));
    render(await call("translate", { method: "POST", body }));
  } catch (error) {
    $("status").textContent = "";
    showError(error.message);
  } finally {
    button.disabled = false;
  }
}

function render(result) {
  const output = $("output");
  output.innerHTML = "";
  result.translations.forEach((text, index) => {
    const item = document.createElement("section");
    item.className = "sentence";
    const line = document.createElement("p");
    line.className = "translation";
    line.textContent = text;
    item.append(line);
    if (result.signals && result.signals[index]) item.append(signalsLine(result.signals[index]));
    if (result.alternatives) item.append(alternativesList(result.alternatives[index]));
    if (result.attention) item.append(heatmap(result.attention[index]));
    output.append(item);
  });
  const detected = result.detected_language;
  const from = detected ? `, detected ${nameOf(detected.language)} ${detected.confidence}%` : "";
  $("status").textContent = `model ${result.model}${from}`;
}

// What may be wrong with a translation: low coverage flags dropped content.
function signalsLine(signals) {
  const line = document.createElement("p");
  line.className = "signals";
  const parts = [`mean log-prob ${signals.mean_log_prob.toFixed(2)}`];
  if (signals.coverage !== null) parts.push(`coverage ${signals.coverage.toFixed(2)}`);
  parts.push(`length ratio ${signals.length_ratio.toFixed(2)}`);
  if (signals.repetition) parts.push("repeats itself");
  line.textContent = parts.join(" · ");
  line.dataset.coverage = signals.coverage === null ? "" : String(signals.coverage);
  if (signals.coverage !== null && signals.coverage < 0.5) line.classList.add("warn");
  return line;
}

function alternativesList(candidates) {
  const list = document.createElement("ol");
  list.className = "alternatives";
  list.start = 2;
  for (const candidate of candidates.slice(1)) {
    const entry = document.createElement("li");
    const text = document.createElement("span");
    text.className = "candidate";
    text.textContent = candidate.text;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = ` ${candidate.score.toFixed(2)}`;
    entry.append(text, score);
    list.append(entry);
  }
  return list;
}

// Rows are target pieces, columns source pieces; darker is more attention.
function heatmap({ source_pieces: source, target_pieces: target, weights }) {
  const canvas = document.createElement("canvas");
  canvas.className = "heatmap";
  const context = canvas.getContext("2d");
  const font = "12px system-ui, sans-serif";
  context.font = font;
  const columns = weights.length ? weights[0].length : 0;
  const label = (pieces, index) => pieces[index] ?? "</s>";
  const widest = (pieces, count) =>
    Math.max(0, ...Array.from({ length: count }, (_, i) => context.measureText(label(pieces, i)).width));
  const left = widest(target, weights.length) + 8;
  const top = widest(source, columns) + 8;
  canvas.width = left + CELL * columns;
  canvas.height = top + CELL * weights.length;
  context.font = font; // resizing the canvas resets its state
  context.fillStyle = "#1f2933";
  context.textAlign = "right";
  context.textBaseline = "middle";
  weights.forEach((row, r) => {
    context.fillText(label(target, r), left - 4, top + CELL * r + CELL / 2);
    row.forEach((weight, c) => {
      context.fillStyle = `rgba(37, 99, 235, ${Math.max(0.04, weight)})`;
      context.fillRect(left + CELL * c, top + CELL * r, CELL - 1, CELL - 1);
    });
    context.fillStyle = "#1f2933";
  });
  context.textAlign = "left";
  for (let c = 0; c < columns; c++) {
    context.save();
    context.translate(left + CELL * c + CELL / 2, top - 4);
    context.rotate(-Math.PI / 2);
    context.fillText(label(source, c), 0, 0);
    context.restore();
  }
  canvas.dataset.rows = weights.length;
  canvas.dataset.columns = columns;
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", `attention: ${weights.length} target by ${columns} source pieces`);
  return canvas;
}

function start() {
  $("api-key").value = localStorage.getItem(KEY_STORE) || "";
  $("api-key").addEventListener("input", () => {
    localStorage.setItem(KEY_STORE, $("api-key").value.trim());
  });
  $("api-key").addEventListener("change", loadLimits);
  $("source").addEventListener("change", fillTargets);
  $("translate").addEventListener("click", translate);
  $("text").addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
      event.preventDefault();
      translate();
    }
  });
  loadLanguages().catch((error) => showError(`Cannot load the languages: ${error.message}`));
  loadLimits();
}

start();
