// MOFO page: upload a clip, play it with its motion box drawn over it, show its motion map.
"use strict";

const BOX_COLOUR = "#ff2d2d";
const METADATA_TIMEOUT_MS = 4000;
const $ = (id) => document.getElementById(id);
const video = $("video");
const overlay = $("overlay");
const ctx = overlay.getContext("2d");

let run = null; // the current upload: {file, record, abort, pending, urls, timer, fellBack}

// -- status and errors ---------------------------------------------------------------------

function setStatus(state, text) {
  $("status").dataset.state = state;
  $("status").textContent = text;
}

function showError(title, detail) {
  $("error-title").textContent = title;
  $("error-detail").textContent = detail || "";
  $("error").hidden = false;
  setStatus("error", "Failed: " + title);
}

// A problem+json body → Error with its title and detail; anything else → its status text.
async function problem(response) {
  let title = `HTTP ${response.status} ${response.statusText}`.trim();
  let detail = "";
  try {
    const text = await response.text();
    try {
      const body = JSON.parse(text);
      title = body.title || title;
      detail = body.detail || "";
    } catch {
      detail = text.slice(0, 300);
    }
  } catch { /* no body */ }
  return Object.assign(new Error(title), { title, detail });
}

// A server started with API keys answers 401/403: ask for a key once, keep it in this browser
// (localStorage), and send it as a bearer token from then on.
const KEY_ITEM = "mofo-api-key";

function authHeaders() {
  const key = localStorage.getItem(KEY_ITEM);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function post(path, r) {
  for (let attempt = 0; ; attempt += 1) {
    const form = new FormData();
    form.append("file", r.file);
    const response = await fetch(path, {
      method: "POST", body: form, signal: r.abort.signal, headers: authHeaders(),
    });
    if ((response.status === 401 || response.status === 403) && attempt === 0) {
      const key = window.prompt("This server needs an API key (MOFO_API_KEYS):");
      if (key) {
        localStorage.setItem(KEY_ITEM, key.trim());
        continue;
      }
    }
    if (!response.ok) throw await problem(response);
    return response;
  }
}

// Tasks of one run: status is "working" while any is pending, "done" when none is.
async function task(r, label, fn) {
  r.pending.add(label);
  if ($("status").dataset.state !== "error") {
    setStatus("working", `Working on ${r.file.name}: ${[...r.pending].join(", ")}…`);
  }
  try {
    await fn();
  } catch (err) {
    if (r !== run || err.name === "AbortError") return;
    showError(err.title || `${label} failed`, err.detail || String(err.message || err));
    return;
  } finally {
    r.pending.delete(label);
  }
  if (r !== run || $("status").dataset.state === "error") return;
  if (r.pending.size) setStatus("working", `Working on ${r.file.name}: ${[...r.pending].join(", ")}…`);
  else setStatus("done", `Done: ${r.file.name}.`);
}

function blobInto(img, r, blob) {
  const url = URL.createObjectURL(blob);
  r.urls.push(url);
  return new Promise((resolve, reject) => {
    img.onload = () => { img.hidden = false; resolve(); };
    img.onerror = () => reject(new Error(`could not show ${img.alt}`));
    img.src = url;
  });
}

// -- one file --------------------------------------------------------------------------------

function reset() {
  if (run) {
    run.abort.abort();
    clearTimeout(run.timer);
    run.urls.forEach(URL.revokeObjectURL);
  }
  video.removeAttribute("src");
  video.load();
  $("error").hidden = true;
  $("results").hidden = true;
  $("stage").hidden = false;
  for (const id of ["preview", "motion-map", "fallback-note"]) $(id).hidden = true;
  $("preview").removeAttribute("src");
  $("motion-map").removeAttribute("src");
  $("summary").replaceChildren();
  $("frames").tBodies[0].replaceChildren();
  ctx.clearRect(0, 0, overlay.width, overlay.height);
}

async function handle(file) {
  if (!file) return;
  reset();
  setStatus("working", `Uploading ${file.name}…`);
  const r = (run = { file, record: null, abort: new AbortController(), pending: new Set(),
                     urls: [], timer: 0, fellBack: false });
  await task(r, "motion boxes", async () => {
    const response = await post("/v1/boxes", r);
    r.record = await response.json();
    if (r !== run) return;
    showRecord(r.record, response.headers.get("X-Mofo-Cache"));
    play(r);
    task(r, "motion map", async () => {
      const blob = await (await post("/v1/motion-map", r)).blob();
      if (r === run) await blobInto($("motion-map"), r, blob);
    });
  });
}

function showRecord(rec, cache) {
  const rows = [
    ["Video", rec.video, "video"],
    ["Size", `${rec.width}×${rec.height}`, "size"],
    ["Frame rate", `${rec.fps} fps`, "fps"],
    ["Frames", String(rec.frames.length), "frames"],
    ["Clip box", rec.clip_box ? `[${rec.clip_box.join(", ")}]` : "none", "clip-box"],
    ["Settings", rec.params, "params"],
    ["Cache", cache || "unknown", "cache"],
    ["Fallback box", rec.fallback ? "yes" : "no", "fallback"],
  ];
  $("summary").replaceChildren(...rows.flatMap(([name, value, key]) => {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = name;
    dd.textContent = value;
    dd.dataset.key = key;
    return [dt, dd];
  }));
  $("frames").tBodies[0].replaceChildren(...rec.frames.map((box, i) => {
    const tr = document.createElement("tr");
    const cells = [i, rec.frame_indices[i], (rec.frame_indices[i] / rec.fps).toFixed(2),
                   box ? box.join(", ") : "none"];
    for (const value of cells) tr.insertCell().textContent = value;
    return tr;
  }));
  $("results").hidden = false;
}

// -- playback with the overlay, or the server's GIF when this browser cannot play the clip --------

function play(r) {
  video.onloadedmetadata = () => { clearTimeout(r.timer); draw(video.currentTime); };
  video.onerror = () => fallBack(r, `media error: ${mediaError()}`);
  r.timer = setTimeout(() => fallBack(r, "no video metadata after 4 s"), METADATA_TIMEOUT_MS);
  const url = URL.createObjectURL(r.file);
  r.urls.push(url);
  video.src = url;
  video.play().catch(() => {}); // errors arrive through onerror
  follow(r);
}

function mediaError() {
  const e = video.error;
  return e ? `${["", "aborted", "network", "decode", "unsupported"][e.code] || e.code}` +
             (e.message ? `: ${e.message}` : "") : "unknown error";
}

function fallBack(r, why) {
  if (r !== run || r.fellBack) return;
  r.fellBack = true;
  clearTimeout(r.timer);
  $("stage").hidden = true;
  $("fallback-note").textContent =
    `This browser cannot play the clip (${why}). Showing the server's GIF preview, ` +
    "with the boxes drawn in, instead.";
  $("fallback-note").hidden = false;
  task(r, "GIF preview", async () => {
    const blob = await (await post("/v1/preview?format=gif", r)).blob();
    if (r === run) await blobInto($("preview"), r, blob);
  });
}

// Redraw on every presented frame (its exact media time) while this upload is the current one.
function follow(r) {
  const next = "requestVideoFrameCallback" in video
    ? (fn) => video.requestVideoFrameCallback((_now, meta) => fn(meta.mediaTime))
    : (fn) => requestAnimationFrame(() => fn(video.currentTime));
  const step = (time) => {
    if (r !== run || r.fellBack) return;
    draw(time);
    next(step);
  };
  next(step);
}
for (const type of ["seeked", "pause"]) video.addEventListener(type, () => draw(video.currentTime));
window.addEventListener("resize", () => draw(video.currentTime));

// The kept frame whose source index is nearest to time × fps.
function keptFrame(rec, time) {
  const target = time * rec.fps;
  let best = 0;
  rec.frame_indices.forEach((index, i) => {
    if (Math.abs(index - target) < Math.abs(rec.frame_indices[best] - target)) best = i;
  });
  return best;
}

function draw(time) {
  const rec = run && run.record;
  if (!rec || !video.videoWidth) return;
  const w = video.clientWidth, h = video.clientHeight, dpr = window.devicePixelRatio || 1;
  if (overlay.width !== Math.round(w * dpr) || overlay.height !== Math.round(h * dpr)) {
    overlay.width = Math.round(w * dpr);
    overlay.height = Math.round(h * dpr);
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  // Where the picture lies inside the element (object-fit: contain), and source px → CSS px.
  const fit = Math.min(w / video.videoWidth, h / video.videoHeight);
  const pw = video.videoWidth * fit, ph = video.videoHeight * fit;
  const ox = (w - pw) / 2, oy = (h - ph) / 2, sx = pw / rec.width, sy = ph / rec.height;
  const i = keptFrame(rec, time);
  overlay.dataset.frame = i;
  markRow(i);
  const box = rec.frames[i];
  if (!box) return;
  ctx.strokeStyle = BOX_COLOUR;
  ctx.lineWidth = 3;
  ctx.setLineDash(rec.fallback ? [8, 6] : []);
  ctx.strokeRect(ox + box[0] * sx, oy + box[1] * sy, (box[2] - box[0]) * sx, (box[3] - box[1]) * sy);
}

function markRow(i) {
  [...$("frames").tBodies[0].rows].forEach((row, k) => row.classList.toggle("current", k === i));
}

// -- input -------------------------------------------------------------------------------------

$("file").addEventListener("change", (e) => handle(e.target.files[0]));
const drop = $("drop");
for (const type of ["dragenter", "dragover"]) {
  drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
for (const type of ["dragleave", "drop"]) {
  drop.addEventListener(type, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  handle(e.dataTransfer.files[0]);
});
// A file dropped beside the zone must not make the browser navigate away to it.
for (const type of ["dragover", "drop"]) window.addEventListener(type, (e) => e.preventDefault());
