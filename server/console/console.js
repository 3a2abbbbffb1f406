// sagestack console: plain JavaScript, no build step, no request outside the stack. It calls the stack's own
// routes (/invocations with custom attributes, /ping, /metrics, /v2/repository/index, /v2/models/{m},
// /samples/{m}), so it works against any sagestack endpoint. Each panel sets data-state="done" or "error" on
// its section when an answer is shown (the browser tests wait for it).
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const role = (section, name) => section.querySelector(`[data-role="${name}"]`);
const tokenInput = $("#token");
tokenInput.value = localStorage.getItem("sagestack-token") || "";
tokenInput.addEventListener("change", () => localStorage.setItem("sagestack-token", tokenInput.value));

class ApiError extends Error {}

async function api(path, { method = "GET", body, headers = {} } = {}) {
  const sent = { ...headers };
  if (tokenInput.value) sent.Authorization = `Bearer ${tokenInput.value}`;
  const started = performance.now();
  const response = await fetch(path, { method, body, headers: sent });
  const ms = performance.now() - started;
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const doc = await response.clone().json();
      if (doc.error) message = `${response.status}: ${doc.error}`;
    } catch (_) { /* not JSON: the status line says it */ }
    throw new ApiError(message);
  }
  return { response, ms };
}

function invoke(model, body, contentType, { accept = "application/json", attrs = "" } = {}) {
  const custom = `tfs-model-name=${model}` + (attrs ? `,${attrs}` : "");
  return api("/invocations", {
    method: "POST", body,
    headers: { "Content-Type": contentType, Accept: accept, "X-Amzn-SageMaker-Custom-Attributes": custom },
  });
}

function showError(section, error) {
  const box = role(section, "error");
  box.hidden = !error;
  box.textContent = error ? error.message || String(error) : "";
  if (error) section.dataset.state = "error";
}

// Runs one panel action: clears the last error, marks the section busy, shows any failure beside the inputs.
async function act(section, work) {
  showError(section, null);
  section.dataset.state = "busy";
  try {
    await work();
    section.dataset.state = "done";
  } catch (error) {
    showError(section, error);
  }
  section.dataset.runs = String(Number(section.dataset.runs || 0) + 1);
}

// ---------------------------------------------------------------- overview

const models = new Map(); // name -> {versions, state, reason, platform}
let lastMetrics = null;

function parseMetrics(text) {
  const counts = {}, buckets = {};
  for (const line of text.split("\n")) {
    const match = line.match(/^(sagestack_requests_total|sagestack_request_duration_seconds_bucket)\{(.*)\} (\S+)$/);
    if (!match) continue;
    const labels = Object.fromEntries([...match[2].matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    const value = Number(match[3]);
    if (match[1] === "sagestack_requests_total") {
      counts[labels.model] = (counts[labels.model] || 0) + value;
    } else {
      const perModel = (buckets[labels.model] ||= {});
      perModel[labels.le] = (perModel[labels.le] || 0) + value;
    }
  }
  return { at: performance.now(), counts, buckets };
}

function quantile(cumulative, q) {
  // As Prometheus's histogram_quantile: linear within the bucket the quantile falls in, in ms.
  const edges = Object.keys(cumulative).filter((le) => le !== "+Inf").sort((a, b) => Number(a) - Number(b));
  const total = cumulative["+Inf"] || 0;
  if (!total) return null;
  let lower = 0, below = 0;
  for (const le of edges) {
    const count = cumulative[le];
    if (count >= q * total) {
      const share = count > below ? (q * total - below) / (count - below) : 1;
      return (lower + (Number(le) - lower) * share) * 1000;
    }
    lower = Number(le);
    below = count;
  }
  return Infinity;
}

function windowed(now, before, model) {
  // The latency of the requests since the last refresh; all of them when there were none since.
  const current = now.buckets[model] || {};
  if (!before || !before.buckets[model]) return current;
  const delta = Object.fromEntries(Object.entries(current).map(([le, n]) => [le, n - (before.buckets[model][le] || 0)]));
  return delta["+Inf"] > 0 ? delta : current;
}

async function refresh() {
  try {
    const ping = await fetch("/ping");
    const badge = $("#health");
    badge.textContent = ping.ok ? "ready" : "not ready";
    badge.className = `badge ${ping.ok ? "ready" : "not-ready"}`;
    const index = await (await api("/v2/repository/index", {
      method: "POST", body: "{}", headers: { "Content-Type": "application/json" },
    })).response.json();
    const seen = new Map();
    for (const entry of index) {
      const model = seen.get(entry.name) || { versions: [], states: new Set(), reasons: new Set() };
      if (entry.version) model.versions.push(entry.version);
      model.states.add(entry.state);
      if (entry.reason) model.reasons.add(entry.reason);
      seen.set(entry.name, model);
    }
    for (const [name, entry] of seen) {
      const known = models.get(name) || {};
      known.versions = entry.versions;
      known.state = entry.states.size === 1 ? [...entry.states][0] : "UNAVAILABLE";
      known.reason = [...entry.reasons].join("; ");
      if (!known.platform && known.state === "READY") {
        try {
          known.platform = (await (await api(`/v2/models/${encodeURIComponent(name)}`)).response.json()).platform;
        } catch (_) { known.platform = "?"; }
      }
      models.set(name, known);
    }
    for (const name of [...models.keys()]) if (!seen.has(name)) models.delete(name);
    const metrics = parseMetrics(await (await api("/metrics")).response.text());
    renderOverview(metrics, lastMetrics);
    lastMetrics = metrics;
    renderTabs();
    $("#global-error").hidden = true;
  } catch (error) {
    $("#global-error").hidden = false;
    $("#global-error").textContent = `refresh: ${error.message}`;
  }
}

function renderOverview(now, before) {
  const rows = [];
  for (const [name, model] of [...models].sort()) {
    const seconds = before ? (now.at - before.at) / 1000 : 0;
    const rate = before && seconds > 0 ? ((now.counts[name] || 0) - (before.counts[name] || 0)) / seconds : null;
    const window = windowed(now, before, name);
    const cells = [
      name, model.versions.join(", ") || "-", model.state, model.platform || "-", variantsOf(name),
      rate === null ? "-" : rate.toFixed(1), format(quantile(window, 0.5)), format(quantile(window, 0.95)),
      model.reason || "",
    ];
    rows.push(`<tr data-model="${name}">${cells.map((c, i) =>
      `<td${i === 2 ? ` class="state-${c}"` : ""}>${escapeHtml(String(c))}</td>`).join("")}</tr>`);
  }
  $("#models tbody").innerHTML = rows.join("");
}

function variantsOf(name) {
  if (models.has(`${name}_compiled`)) return `uncompiled, compiled (${name}_compiled)`;
  if (name.endsWith("_compiled") && models.has(name.slice(0, -9))) return `compiled twin of ${name.slice(0, -9)}`;
  return "-";
}

const format = (ms) => (ms === null ? "-" : ms === Infinity ? "> 60000" : ms < 10 ? ms.toFixed(1) : ms.toFixed(0));
const escapeHtml = (s) => s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

// ---------------------------------------------------------------- tabs and panels

const FAMILIES = [["yolov4", "tpl-yolov4", yolov4Panel], ["anomaly", "tpl-anomaly", anomalyPanel],
  ["credit_risk", "tpl-credit", creditPanel], ["music_transformer", "tpl-music", musicPanel]];
let activeTab = null;

function familyOf(name) {
  return FAMILIES.find(([prefix]) => name.startsWith(prefix)) || [null, "tpl-generic", genericPanel];
}

function renderTabs() {
  const nav = $("#tabs");
  const names = [...models.keys()].sort();
  if (nav.dataset.names === names.join(",")) return;
  nav.dataset.names = names.join(",");
  nav.innerHTML = "";
  for (const name of names) {
    const button = document.createElement("button");
    button.textContent = name;
    button.dataset.model = name;
    button.addEventListener("click", () => openPanel(name));
    nav.append(button);
  }
  const wanted = new URLSearchParams(location.hash.slice(1)).get("model");
  if (!activeTab || !models.has(activeTab)) openPanel(models.has(wanted) ? wanted : names[0]);
}

function openPanel(name) {
  if (!name) return;
  activeTab = name;
  for (const b of $("#tabs").children) b.classList.toggle("active", b.dataset.model === name);
  const [, template, build] = familyOf(name);
  const section = $(`#${template}`).content.firstElementChild.cloneNode(true);
  section.dataset.model = name;
  const leaving = $("#panel").firstElementChild;
  if (leaving && leaving.teardown) leaving.teardown(); // a camera, say, stops with its panel
  $("#panel").replaceChildren(section);
  history.replaceState(null, "", `#model=${encodeURIComponent(name)}`);
  build(section, name);
}

async function listSamples(model, suffixes) {
  let listed = [];
  try {
    listed = (await (await api(`/samples/${encodeURIComponent(model)}`)).response.json()).samples;
  } catch (_) { /* a model without samples */ }
  return listed.filter((s) => suffixes.some((x) => s.name.endsWith(x)));
}

async function fillSamples(section, model, suffixes) {
  const select = role(section, "samples");
  const listed = await listSamples(model, suffixes);
  if (!select) return listed;
  select.innerHTML = `<option value="">(choose)</option>` +
    listed.map((s) => `<option value="${escapeHtml(s.name)}">${escapeHtml(s.name)}</option>`).join("");
  return listed;
}

async function sample(model, file) {
  const { response } = await api(`/samples/${encodeURIComponent(model)}/${encodeURIComponent(file)}`);
  return new File([await response.blob()], file, { type: response.headers.get("Content-Type") });
}

// Wires a file input, a drop zone and a sample list to one "current file" for the panel.
function fileSource(section, model, suffixes, onChange) {
  const state = { file: null };
  const set = (file) => { state.file = file; onChange(file); };
  const input = role(section, "file");
  input.addEventListener("change", () => input.files[0] && set(input.files[0]));
  const drop = role(section, "drop");
  if (drop) {
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      if (e.dataTransfer.files[0]) set(e.dataTransfer.files[0]);
    });
  }
  const select = role(section, "samples");
  if (select) {
    select.addEventListener("change", () => select.value &&
      act(section, async () => set(await sample(model, select.value))));
  }
  fillSamples(section, model, suffixes);
  return state;
}

function contentTypeOf(file) {
  if (file.type) return file.type;
  return /\.png$/i.test(file.name) ? "image/png" : /\.jpe?g$/i.test(file.name) ? "image/jpeg" : "application/octet-stream";
}

async function drawImage(canvas, file) {
  const bitmap = await createImageBitmap(file);
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  canvas.getContext("2d").drawImage(bitmap, 0, 0);
  return bitmap;
}

// ---------------------------------------------------------------- yolov4

function yolov4Panel(section, model) {
  const canvas = role(section, "canvas");
  let bitmap = null;
  const source = fileSource(section, model, [".jpg", ".jpeg", ".png"], async (file) => {
    bitmap = await drawImage(canvas, file);
    role(section, "summary").textContent = `${file.name}: ${bitmap.width}x${bitmap.height}`;
  });
  for (const name of ["conf", "iou"]) {
    const slider = role(section, name);
    slider.addEventListener("input", () => { role(section, `${name}-value`).textContent = slider.value; });
  }
  const attrs = () => `conf_threshold=${role(section, "conf").value},iou_threshold=${role(section, "iou").value}`;
  const need = () => { if (!source.file) throw new Error("choose an image first (a file, a drop or a sample)"); };
  const redraw = (sets) => {
    canvas.getContext("2d").drawImage(bitmap, 0, 0);
    for (const [boxes, color, dashed] of sets) drawBoxes(canvas, boxes, color, dashed);
  };

  role(section, "run").addEventListener("click", () => act(section, async () => {
    need();
    const { response, ms } = await invoke(model, source.file, contentTypeOf(source.file), { attrs: attrs() });
    const boxes = await response.json();
    redraw([[boxes, "#e11d48", false]]);
    section.dataset.boxes = JSON.stringify(boxes);
    role(section, "summary").textContent =
      `${boxes.length} detections by ${response.headers.get("X-Sagestack-Model") || model} in ${ms.toFixed(0)} ms`;
  }));

  role(section, "compare").addEventListener("click", () => act(section, async () => {
    need();
    const base = model.replace(/_compiled$/, "");
    const answers = {};
    for (const compiled of ["true", "false"]) {
      const { response, ms } = await invoke(base, source.file, contentTypeOf(source.file),
        { attrs: `${attrs()},compiled=${compiled}` });
      answers[compiled] = { boxes: await response.json(), ms, served: response.headers.get("X-Sagestack-Model") };
    }
    redraw([[answers.false.boxes, "#2563eb", true], [answers.true.boxes, "#e11d48", false]]);
    const table = role(section, "compare-table");
    table.hidden = false;
    table.tBodies[0].innerHTML = ["true", "false"].map((c) => `<tr><td>${c === "true" ? "compiled" : "uncompiled"}` +
      `</td><td>${escapeHtml(answers[c].served || "")}</td><td>${answers[c].boxes.length}</td>` +
      `<td>${answers[c].ms.toFixed(0)}</td></tr>`).join("");
    const f1 = agreement(answers.false.boxes, answers.true.boxes);
    role(section, "summary").textContent = `compiled (red) vs uncompiled (blue, dashed): detections agree at ` +
      `F1 ${f1.toFixed(3)} (IoU 0.5, same class); ${(answers.false.ms / answers.true.ms).toFixed(2)}x faster ` +
      "compiled, end to end from this browser";
  }));
}

function drawBoxes(canvas, boxes, color, dashed) {
  const ctx = canvas.getContext("2d");
  ctx.lineWidth = Math.max(2, canvas.width / 320);
  ctx.font = `${Math.max(12, canvas.width / 50)}px sans-serif`;
  ctx.setLineDash(dashed ? [6, 4] : []);
  for (const d of boxes) {
    const [x1, y1, x2, y2] = d.box;
    ctx.strokeStyle = color;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    if (!dashed) {
      const label = `${d.class} ${d.score.toFixed(2)}`;
      ctx.fillStyle = color;
      ctx.fillRect(x1, Math.max(0, y1 - 16), ctx.measureText(label).width + 6, 16);
      ctx.fillStyle = "#fff";
      ctx.fillText(label, x1 + 3, Math.max(12, y1 - 4));
    }
  }
  ctx.setLineDash([]);
}

function iou(a, b) {
  const w = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const h = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const inter = w * h;
  const union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
  if (union <= 0) return a.every((v, i) => v === b[i]) ? 1 : 0; // a box clipped to a line matches only itself
  return inter / union;
}

function agreement(reference, candidate) {
  // Each reference box (best score first) takes the unused candidate of its class it overlaps most, at IoU 0.5 or
  // more: F1 of the matched boxes.
  if (!reference.length && !candidate.length) return 1;
  const used = new Set();
  let matched = 0;
  for (const r of reference) {
    let best = -1, bestIou = 0.5;
    candidate.forEach((c, k) => {
      const overlap = !used.has(k) && c.class_id === r.class_id ? iou(r.box, c.box) : 0;
      if (overlap >= bestIou) { best = k; bestIou = overlap; }
    });
    if (best >= 0) { used.add(best); matched += 1; }
  }
  return (2 * matched) / (reference.length + candidate.length);
}

// ---------------------------------------------------------------- anomaly
// As the Lookout for Vision PoC kit's page: Configuration (camera or file, the ROI), Training (a labelled data set
// in a project, then a training job with progress) and Inference (start a trained version, detect on a capture).

const enc = encodeURIComponent;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function anomalyPanel(section, model) {
  const canvas = role(section, "canvas");
  const video = role(section, "video");
  const roiInputs = [...section.querySelectorAll("[data-roi]")];
  const state = { bitmap: null, stream: null, timer: null, drag: null, described: null };
  const summary = (text) => { role(section, "summary").textContent = text; };
  const source = fileSource(section, model, [".png", ".jpg", ".jpeg"], async (file) => {
    stopCamera();
    state.bitmap = await drawImage(canvas, file);
    summary(`${file.name}: ${state.bitmap.width}x${state.bitmap.height}`);
    drawRoi();
  });

  const tabs = [...section.querySelectorAll(".subtabs button")];
  const show = (name) => {
    for (const b of tabs) b.classList.toggle("active", b.dataset.tab === name);
    for (const body of section.querySelectorAll("[data-tab-body]")) body.hidden = body.dataset.tabBody !== name;
    section.dataset.tab = name;
  };
  for (const b of tabs) b.addEventListener("click", () => show(b.dataset.tab));
  show("configuration");

  // ---- the image: the camera (getUserMedia), a file, a drop or a sample
  function stopCamera() {
    if (!state.stream) return;
    for (const track of state.stream.getTracks()) track.stop();
    clearInterval(state.timer);
    state.stream = null;
    video.srcObject = null;
  }
  role(section, "camera").addEventListener("click", () => act(section, async () => {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("this page has no camera access here (browsers allow it on https or localhost): upload a file");
    }
    stopCamera();
    state.stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    video.srcObject = state.stream;
    await video.play();
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    state.bitmap = null;
    state.timer = setInterval(() => { canvas.getContext("2d").drawImage(video, 0, 0); drawRoi(false); }, 100);
    summary(`camera: ${video.videoWidth}x${video.videoHeight}`);
  }));
  async function frame() {
    if (state.stream) {
      const still = document.createElement("canvas");
      still.width = video.videoWidth;
      still.height = video.videoHeight;
      still.getContext("2d").drawImage(video, 0, 0);
      const blob = await new Promise((resolve) => still.toBlob(resolve, "image/png"));
      return new File([blob], "camera.png", { type: "image/png" });
    }
    if (!source.file) throw new Error("choose an image first (the camera, a file, a drop or a sample)");
    return source.file;
  }

  // ---- the region of interest
  const readRoi = () => {
    const values = roiInputs.map((i) => i.value.trim());
    if (values.every((v) => v === "")) return null;
    if (values.some((v) => !/^\d+$/.test(v))) throw new Error("the ROI is four whole numbers: x, y, width, height");
    return values.map(Number);
  };
  const setRoi = (roi) => roiInputs.forEach((input, i) => { input.value = roi ? roi[i] : ""; });
  function drawRoi(repaint = true) {
    const ctx = canvas.getContext("2d");
    if (repaint && state.bitmap && !state.stream) ctx.drawImage(state.bitmap, 0, 0);
    let roi = null;
    try { roi = readRoi(); } catch (_) { return; }
    if (!roi) return;
    ctx.save();
    ctx.setLineDash([6, 4]);
    ctx.strokeStyle = "#facc15";
    ctx.lineWidth = 2;
    ctx.strokeRect(...roi);
    ctx.restore();
  }
  const pixel = (e) => {
    const box = canvas.getBoundingClientRect();
    return [Math.round((e.clientX - box.left) * canvas.width / box.width),
      Math.round((e.clientY - box.top) * canvas.height / box.height)];
  };
  canvas.addEventListener("mousedown", (e) => { if (section.dataset.tab === "configuration") state.drag = pixel(e); });
  canvas.addEventListener("mousemove", (e) => {
    if (!state.drag) return;
    const [x, y] = pixel(e);
    const [x0, y0] = state.drag;
    setRoi([Math.min(x, x0), Math.min(y, y0), Math.abs(x - x0), Math.abs(y - y0)]);
    drawRoi();
  });
  const endDrag = () => { state.drag = null; };
  window.addEventListener("mouseup", endDrag);
  section.teardown = () => { stopCamera(); window.removeEventListener("mouseup", endDrag); };
  for (const input of roiInputs) input.addEventListener("input", () => drawRoi());
  const putRoi = (roi) => api(`/projects/${enc(needProject())}/roi`, {
    method: "PUT", body: JSON.stringify({ Roi: roi }), headers: { "Content-Type": "application/json" },
  });
  role(section, "apply-roi").addEventListener("click", () => act(section, async () => {
    const roi = readRoi();
    await putRoi(roi);
    await describe();
    summary(roi ? `project ${needProject()}: images are cropped to ${roi.join(", ")} (x, y, w, h)` : "no ROI");
  }));
  role(section, "reset-roi").addEventListener("click", () => act(section, async () => {
    setRoi(null);
    drawRoi();
    await putRoi(null);
    await describe();
  }));

  // ---- projects: /projects (SAGESTACK_PROJECTS_DIR)
  const projectSelect = role(section, "project");
  function needProject() {
    if (!projectSelect.value) throw new Error("create or choose a project first");
    return projectSelect.value;
  }
  async function listProjects(chosen) {
    let listed;
    try {
      listed = (await (await api("/projects")).response.json()).Projects;
    } catch (error) {
      role(section, "projects").querySelector("legend").textContent =
        "Project (the project API is off here: the stack needs SAGESTACK_PROJECTS_DIR)";
      return;
    }
    projectSelect.innerHTML = `<option value="">(none)</option>` + listed.map((p) =>
      `<option value="${escapeHtml(p.ProjectName)}">${escapeHtml(p.ProjectName)}</option>`).join("");
    projectSelect.value = chosen || (listed[0] ? listed[0].ProjectName : "");
    await describe();
  }
  projectSelect.addEventListener("change", () => act(section, describe));
  role(section, "create").addEventListener("click", () => act(section, async () => {
    const name = role(section, "project-name").value.trim();
    await api("/projects", {
      method: "POST", body: JSON.stringify({ ProjectName: name }), headers: { "Content-Type": "application/json" },
    });
    await listProjects(name);
    summary(`project ${name} created`);
  }));

  async function describe() {
    const name = projectSelect.value;
    state.described = null;
    role(section, "dataset").hidden = true;
    if (!name) return;
    const doc = await (await api(`/projects/${enc(name)}`)).response.json();
    state.described = doc;
    setRoi(doc.Roi);
    drawRoi();
    const counts = doc.Dataset.Counts;
    const needed = doc.Dataset.MinimumCounts;
    role(section, "counts").tBodies[0].innerHTML = ["normal", "anomaly"].map((label) =>
      `<tr data-label="${label}"><td>${label}</td><td>${counts[label]}</td><td>${needed[label]}</td></tr>`).join("");
    section.dataset.counts = JSON.stringify(counts);
    const last = doc.Dataset.Last;
    if (last) {
      const { response } = await api(`/projects/${enc(name)}/images/${last.Label}/${last.File}`);
      role(section, "last").src = URL.createObjectURL(await response.blob());
      role(section, "last-caption").textContent = `last added: ${last.Label}/${last.File}` +
        (last.Kind ? ` (${last.Kind})` : "") + `, ${last.Size.join("x")}`;
      role(section, "dataset").hidden = false;
    }
    const select = role(section, "version");
    const kept = select.value;
    select.innerHTML = `<option value="">the served ${escapeHtml(model)} (its default version)</option>` +
      doc.Models.map((m) => `<option value="${m.ModelVersion}">${escapeHtml(name)} version ${m.ModelVersion}: ` +
        `${m.Status}${m.Hosting ? ` (as ${escapeHtml(m.Hosting.Model)} version ${m.Hosting.Version})` : ""}</option>`)
        .join("");
    if (doc.Models.some((m) => m.ModelVersion === kept)) select.value = kept;
    const shown = doc.Models.find((m) => m.ModelVersion === select.value) ||
      [...doc.Models].reverse().find((m) => m.Performance);
    if (shown) await showEvaluation(name, shown);
  }
  const chosenVersion = () => state.described && state.described.Models.find(
    (m) => m.ModelVersion === role(section, "version").value);
  role(section, "version").addEventListener("change", () => act(section, async () => {
    const chosen = chosenVersion();
    if (chosen) await showEvaluation(needProject(), chosen);
  }));

  // ---- training
  async function addImage(label, file) {
    const kind = role(section, "kind").value.trim();
    const query = label === "anomaly" && kind ? `?kind=${enc(kind)}` : "";
    await api(`/projects/${enc(needProject())}/images/${label}${query}`, {
      method: "POST", body: file, headers: { "Content-Type": contentTypeOf(file) },
    });
  }
  for (const label of ["normal", "anomaly"]) {
    role(section, `add-${label}`).addEventListener("click", () => act(section, async () => {
      await addImage(label, await frame());
      await describe();
    }));
    const upload = role(section, `upload-${label}`);
    upload.addEventListener("change", () => act(section, async () => {
      const files = [...upload.files];
      for (const [i, file] of files.entries()) {
        summary(`adding ${file.name} to ${label} (${i + 1} of ${files.length})`);
        await addImage(label, file);
      }
      upload.value = "";
      await describe();
      summary(`${files.length} images added to ${label}`);
    }));
  }
  role(section, "train").addEventListener("click", () => act(section, async () => {
    const name = needProject();
    const { response } = await api(`/projects/${enc(name)}/models`, {
      method: "POST", body: JSON.stringify({ Fast: role(section, "fast").checked }),
      headers: { "Content-Type": "application/json" },
    });
    let job = (await response.json()).ModelMetadata;
    const bar = role(section, "progress");
    bar.hidden = false;
    while (job.Status === "TRAINING") {
      const p = job.Progress || {};
      bar.value = p.Total ? p.Done / p.Total : 0;
      summary(`training ${name} version ${job.ModelVersion}: ${job.StatusMessage} (${p.Done || 0} of ${p.Total || "?"})`);
      await sleep(1000);
      job = (await (await api(`/projects/${enc(name)}/models/${job.ModelVersion}`)).response.json()).ModelDescription;
    }
    bar.hidden = true;
    if (job.Status !== "TRAINED") throw new Error(`training version ${job.ModelVersion} failed: ${job.StatusMessage}`);
    await describe();
    role(section, "version").value = job.ModelVersion;
    await showEvaluation(name, job);
    summary(`${name} version ${job.ModelVersion} is trained: F1 ${job.Performance.F1Score.toFixed(3)}`);
  }));
  async function showEvaluation(name, described) {
    const table = role(section, "evaluation");
    const gallery = role(section, "gallery");
    table.hidden = gallery.hidden = !described.Performance;
    if (!described.Performance) return;
    const perf = described.Performance;
    const kinds = Object.entries(described.Evaluation.per_kind || {});
    table.tHead.innerHTML = `<tr><th colspan="2">${escapeHtml(name)} version ${described.ModelVersion}, on the ` +
      `held-out fifth (${described.Evaluation.n_test.normal} normal, ${described.Evaluation.n_test.anomaly} ` +
      "anomalous)</th></tr>";
    const rows = [["precision", perf.Precision], ["recall", perf.Recall], ["F1", perf.F1Score],
      ["AUROC", perf.AUROC], ...kinds.map(([kind, v]) => [`recall: ${kind}`, v.recall])];
    table.tBodies[0].innerHTML = rows.map(([k, v]) =>
      `<tr><td>${escapeHtml(k)}</td><td>${v === null ? "-" : v.toFixed(3)}</td></tr>`).join("");
    section.dataset.evaluation = JSON.stringify(perf);
    const { response } = await api(`/projects/${enc(name)}/models/${described.ModelVersion}/gallery.png`);
    gallery.src = URL.createObjectURL(await response.blob());
  }

  // ---- inference
  const needVersion = () => {
    const chosen = chosenVersion();
    if (!chosen) throw new Error("choose a trained version of the project first");
    return chosen;
  };
  for (const action of ["start", "stop"]) {
    role(section, action).addEventListener("click", () => act(section, async () => {
      const name = needProject();
      const chosen = needVersion();
      summary(`${action === "start" ? "starting" : "stopping"} ${name} version ${chosen.ModelVersion}`);
      const { response } = await api(`/projects/${enc(name)}/models/${chosen.ModelVersion}/${action}`, {
        method: "POST", body: action === "start" ? JSON.stringify({ ModelName: model }) : undefined,
        headers: { "Content-Type": "application/json" },
      });
      const described = (await response.json()).ModelDescription;
      await describe();
      section.dataset.hosting = JSON.stringify(described.Hosting || null);
      summary(described.Hosting ? `${name} version ${chosen.ModelVersion} is served as ${described.Hosting.Model} ` +
        `version ${described.Hosting.Version}` : `${name} version ${chosen.ModelVersion} is stopped`);
    }));
  }
  role(section, "run").addEventListener("click", () => act(section, async () => {
    const file = await frame();
    const chosen = chosenVersion();
    if (chosen && !chosen.Hosting) throw new Error(`version ${chosen.ModelVersion} is ${chosen.Status}: start it first`);
    const target = chosen ? chosen.Hosting.Model : model;
    const attrs = chosen ? `tfs-model-version=${chosen.Hosting.Version}` : "";
    const { response, ms } = await invoke(target, file, contentTypeOf(file), { attrs });
    const answer = await response.json();
    stopCamera(); // the verdict stays over the frame it is about
    state.bitmap = await drawImage(canvas, file);
    const ctx = canvas.getContext("2d");
    const box = answer.BoundingBox;
    if (box) {
      const mask = await createImageBitmap(await (await fetch(`data:image/png;base64,${answer.AnomalyMask}`)).blob());
      ctx.globalAlpha = 0.35;
      ctx.drawImage(tint(mask), box.Left, box.Top, box.Width, box.Height);
      ctx.globalAlpha = 1;
      ctx.strokeStyle = "#e11d48";
      ctx.lineWidth = 2;
      ctx.strokeRect(box.Left, box.Top, box.Width, box.Height);
    }
    section.dataset.answer = JSON.stringify({ ...answer, AnomalyMask: "(png)" });
    summary(`${answer.IsAnomalous ? "ANOMALOUS" : "normal"}: score ${answer.AnomalyScore} against the threshold ` +
      `${answer.Threshold} (confidence ${answer.Confidence}) in ${ms.toFixed(0)} ms` +
      (chosen ? ` by ${needProject()} version ${chosen.ModelVersion}` : "") +
      (box ? `; the region ${box.Width}x${box.Height} at (${box.Left}, ${box.Top})` : ""));
  }));

  listProjects().catch((error) => showError(section, error));
}

function tint(mask) {
  // The mask's cells in red, cropped to the cells that are set (the bounding box's extent).
  const c = document.createElement("canvas");
  c.width = mask.width;
  c.height = mask.height;
  const ctx = c.getContext("2d");
  ctx.drawImage(mask, 0, 0);
  const pixels = ctx.getImageData(0, 0, c.width, c.height);
  let x0 = c.width, y0 = c.height, x1 = -1, y1 = -1;
  for (let y = 0; y < c.height; y++) {
    for (let x = 0; x < c.width; x++) {
      const i = 4 * (y * c.width + x);
      const on = pixels.data[i] > 127;
      pixels.data.set(on ? [225, 29, 72, 255] : [0, 0, 0, 0], i);
      if (on) { x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y); }
    }
  }
  ctx.putImageData(pixels, 0, 0);
  if (x1 < 0) return c;
  const cropped = document.createElement("canvas");
  cropped.width = x1 - x0 + 1;
  cropped.height = y1 - y0 + 1;
  cropped.getContext("2d").drawImage(c, x0, y0, cropped.width, cropped.height, 0, 0, cropped.width, cropped.height);
  return cropped;
}

// ---------------------------------------------------------------- credit_risk

async function creditPanel(section, model) {
  const form = role(section, "form");
  let record = {};
  try {
    const body = await (await sample(model, "application.json")).text();
    record = JSON.parse(body).instances[0];
  } catch (error) {
    showError(section, new Error(`no sample application (${error.message}); fill the fields by hand`));
  }
  form.innerHTML = Object.entries(record).map(([key, value]) => `<label>${escapeHtml(key)}<input name="${key}"` +
    ` type="${typeof value === "number" ? "number" : "text"}" value="${escapeHtml(String(value))}"></label>`).join("");
  const read = () => Object.fromEntries([...form.elements].map((e) =>
    [e.name, e.type === "number" && e.value !== "" ? Number(e.value) : e.value]));

  role(section, "run").addEventListener("click", () => act(section, async () => {
    const body = JSON.stringify({ instances: [read()] });
    const { response, ms } = await invoke(model, body, "application/json");
    const prediction = (await response.json()).predictions[0];
    section.dataset.answer = JSON.stringify(prediction);
    role(section, "summary").textContent = `${prediction.label}: probability of high risk ` +
      `${(100 * prediction.probability_high_risk).toFixed(1)}% (${ms.toFixed(0)} ms)`;
  }));
  role(section, "explain").addEventListener("click", () => act(section, async () => {
    const record = read();
    const row = Object.values(record).map((v) => (/[",\n]/.test(String(v)) ? `"${String(v).replace(/"/g, '""')}"` : v));
    const { response, ms } = await api("/invocations", {
      method: "POST", body: row.join(",") + "\n",
      headers: { "Content-Type": "text/csv", Accept: "text/csv", "X-Amzn-SageMaker-Enable-Explanations": "`true`",
        "X-Amzn-SageMaker-Custom-Attributes": `tfs-model-name=${model}` },
    });
    const text = await response.text();
    let doc = null;
    try { doc = JSON.parse(text); } catch (_) { /* a plain CSV answer: no explainer */ }
    if (!doc || !doc.explanations || !doc.explanations.kernel_shap) {
      throw new Error(`this endpoint explains nothing for ${model}: it has no ExplainerConfig (serve with ` +
        `SAGESTACK_ENDPOINT_CONFIG=examples/credit_risk_explained.json); its plain answer was ${text.trim()}`);
    }
    const features = doc.explanations.kernel_shap[0].map((f) => [f.feature_header, f.attributions[0].attribution[0]]);
    const widest = Math.max(...features.map(([, phi]) => Math.abs(phi)), 1e-9);
    const table = role(section, "explanation");
    table.hidden = false;
    table.tBodies[0].innerHTML = [...features].sort((a, b) => Math.abs(b[1]) - Math.abs(a[1])).map(([name, phi]) =>
      `<tr><td>${escapeHtml(name)}</td><td>${escapeHtml(String(record[name] ?? ""))}</td><td>${phi.toFixed(4)}</td>` +
      `<td><span class="bar ${phi >= 0 ? "up" : "down"}" style="width:${(6 * Math.abs(phi) / widest).toFixed(2)}rem">` +
      "</span></td></tr>").join("");
    section.dataset.explanation = JSON.stringify(features);
    const total = features.reduce((sum, [, phi]) => sum + phi, 0);
    role(section, "summary").textContent = `explained in ${ms.toFixed(0)} ms: the baseline's score ` +
      `${doc.base_values[0].toFixed(4)} plus the attributions (${total.toFixed(4)}) is this application's ` +
      `${(doc.base_values[0] + total).toFixed(4)} (answer ${doc.predictions.data.trim()}); red raises the risk`;
  }));
  showBias(section, model).catch((error) => showError(section, error));
  role(section, "file").addEventListener("change", (event) => act(section, async () => {
    const file = event.target.files[0];
    const { response } = await invoke(model, file, "text/csv");
    const predictions = (await response.json()).predictions;
    const table = role(section, "batch");
    table.hidden = false;
    table.tHead.innerHTML = "<tr><th>#</th><th>decision</th><th>probability of high risk</th></tr>";
    table.tBodies[0].innerHTML = predictions.map((p, i) => `<tr><td>${i + 1}</td><td>${escapeHtml(p.label)}</td>` +
      `<td>${(100 * p.probability_high_risk).toFixed(1)}%</td></tr>`).join("");
    role(section, "summary").textContent = `${predictions.length} applications scored from ${file.name}`;
  }));
}

// The training report's bias chart and metrics, which the credit build ships with the model's samples.
async function showBias(section, model) {
  const listed = await listSamples(model, [".png", ".json"]);
  if (!listed.some((s) => s.name === "bias_sex.png") || !listed.some((s) => s.name === "bias.json")) return;
  role(section, "bias-chart").src = URL.createObjectURL(await sample(model, "bias_sex.png"));
  const report = JSON.parse(await (await sample(model, "bias.json")).text());
  role(section, "bias-table").tBodies[0].innerHTML = Object.entries(report.metrics).map(([name, value]) =>
    `<tr><td>${escapeHtml(name)}</td><td>${value === null ? "-" : value.toFixed(3)}</td>` +
    `<td>${escapeHtml(report.explanations[name] || "")}</td></tr>`).join("");
  const details = role(section, "bias");
  details.querySelector("summary").textContent += ` for the facet ${report.facet} (disadvantaged: ` +
    `${report.disadvantaged})`;
  details.hidden = false;
  section.dataset.bias = JSON.stringify(report.metrics);
}

// ---------------------------------------------------------------- music_transformer

function musicPanel(section, model) {
  const canvas = role(section, "canvas");
  const source = fileSource(section, model, [".mid", ".midi"], (file) => {
    role(section, "summary").textContent = `${file.name} (${file.size} bytes)`;
  });
  const params = () => {
    if (!source.file) throw new Error("choose a MIDI file first (a file or a sample)");
    return [...section.querySelectorAll("[data-param]")].map((e) => `${e.dataset.param}=${e.value}`).join(",");
  };
  // Browsers play no MIDI: the handler renders the same extension (the same seed) as a WAV.
  role(section, "play").addEventListener("click", () => act(section, async () => {
    const { response, ms } = await invoke(model, source.file, "audio/midi",
      { accept: "audio/wav", attrs: params() });
    const audio = role(section, "audio");
    audio.src = URL.createObjectURL(await response.blob());
    audio.hidden = false;
    await new Promise((resolve, reject) => {
      audio.onloadedmetadata = resolve;
      audio.onerror = () => reject(new Error("the browser could not decode the WAV"));
    });
    section.dataset.audioSeconds = String(audio.duration);
    role(section, "summary").textContent = `${audio.duration.toFixed(2)} s of sound, rendered in ${ms.toFixed(0)} ms`;
    audio.play().catch(() => { /* autoplay refused: the controls play it */ });
  }));
  role(section, "run").addEventListener("click", () => act(section, async () => {
    const { response } = await invoke(model, source.file, "audio/midi",
      { accept: "application/jsonlines", attrs: params() });
    const added = [];
    let last = null;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += value;
      const lines = pending.split("\n");
      pending = lines.pop();
      for (const line of lines.filter(Boolean)) {
        const doc = JSON.parse(line);
        if (doc.error) throw new ApiError(doc.error);
        if (doc.note) {
          added.push(doc.note);
          pianoRoll(canvas, [], added, 0);
          role(section, "summary").textContent = `${added.length} notes so far…`;
        } else {
          last = doc;
        }
      }
    }
    if (!last) throw new Error("the stream ended without the finished melody");
    pianoRoll(canvas, last.notes.filter((n) => n.start < last.extension_starts_at),
      last.notes.filter((n) => n.start >= last.extension_starts_at), last.extension_starts_at);
    const midi = Uint8Array.from(atob(last.midi), (c) => c.charCodeAt(0));
    const link = role(section, "download");
    link.href = URL.createObjectURL(new Blob([midi], { type: "audio/midi" }));
    link.hidden = false;
    section.dataset.answer = JSON.stringify({ added_notes: last.added_notes, notes: last.notes.length });
    role(section, "summary").textContent = `${last.added_notes} notes added after ` +
      `${last.extension_starts_at.toFixed(1)} s (input in blue, extension in orange)`;
  }));
}

function pianoRoll(canvas, given, added, boundary) {
  const ctx = canvas.getContext("2d");
  const all = given.concat(added);
  ctx.fillStyle = "#fafafa";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (!all.length) return;
  const end = Math.max(...all.map((n) => n.end), 1);
  const low = Math.min(...all.map((n) => n.pitch)) - 2, high = Math.max(...all.map((n) => n.pitch)) + 2;
  const x = (t) => (t / end) * canvas.width, rowH = canvas.height / (high - low + 1);
  const y = (p) => canvas.height - (p - low + 1) * rowH;
  for (const [notes, color] of [[given, "#2563eb"], [added, "#ea580c"]]) {
    ctx.fillStyle = color;
    for (const n of notes) ctx.fillRect(x(n.start), y(n.pitch), Math.max(2, x(n.end) - x(n.start)), rowH - 1);
  }
  if (boundary) {
    ctx.strokeStyle = "#333";
    ctx.beginPath();
    ctx.moveTo(x(boundary), 0);
    ctx.lineTo(x(boundary), canvas.height);
    ctx.stroke();
  }
}

// ---------------------------------------------------------------- any other model

async function genericPanel(section, model) {
  const body = role(section, "body");
  body.value = JSON.stringify({ instances: [1.0, 2.0, 5.0] }, null, 1);
  try {
    const listed = await listSamples(model, [".json"]);
    if (listed.length) {
      body.value = await (await sample(model, listed[0].name)).text();
    } else {
      const meta = await (await api(`/v2/models/${encodeURIComponent(model)}`)).response.json();
      body.value = JSON.stringify(exampleFromSignature(meta.inputs), null, 1);
    }
  } catch (_) { /* keep the default body */ }
  role(section, "run").addEventListener("click", () => act(section, async () => {
    const { response, ms } = await invoke(model, body.value, role(section, "ctype").value);
    const text = await response.text();
    let shown = text;
    try { shown = JSON.stringify(JSON.parse(text), null, 1); } catch (_) { /* not JSON: as it came */ }
    role(section, "answer").textContent = `${response.status} in ${ms.toFixed(0)} ms\n${shown}`;
    section.dataset.answer = text;
  }));
}

function exampleFromSignature(inputs) {
  // A request of ones in the signature's shapes (-1 dimensions as 1, or 3 for a lone batch dimension).
  const fill = (shape, value) => (shape.length ? Array.from({ length: shape[0] }, () => fill(shape.slice(1), value))
    : value);
  const tensor = (t) => {
    const dims = t.shape.map(Number);
    const shape = dims.length === 1 && dims[0] < 0 ? [3] : dims.map((d) => (d < 0 ? 1 : d));
    return fill(shape, t.datatype === "BYTES" ? "" : 1.0);
  };
  if (inputs.length === 1) return { instances: tensor(inputs[0]) };
  return { inputs: Object.fromEntries(inputs.map((t) => [t.name, tensor(t)])) };
}

refresh();
setInterval(refresh, 3000);
