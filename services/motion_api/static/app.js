// MOFO page: upload a clip, box it in a job (progress, cancel), play it with its motion box
// drawn over it, show its motion map, and let the record be downloaded.
"use strict";

const BOX_COLOUR = "#ff2d2d";
const METADATA_TIMEOUT_MS = 4000;
const POLL_MS = 400;
const ENDED = new Set(["finished", "failed", "cancelled"]);
const HASH_MAX_BYTES = 256 * 1024 * 1024; // larger clips skip the cache lookup (read in memory)
const $ = (id) => document.getElementById(id);
const video = $("video");
const overlay = $("overlay");
const ctx = overlay.getContext("2d");

// The current clip: {file, query, record, cache, job, abort, pending, urls, timer, fellBack}
let run = null;

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

const failure = (title, detail) => Object.assign(new Error(title), { title, detail });

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
  return failure(title, detail);
}

// -- requests --------------------------------------------------------------------------------

// A server started with API keys answers 401/403: ask for a key once, keep it in this browser
// (localStorage), and send it as a bearer token from then on.
const KEY_ITEM = "mofo-api-key";

function authHeaders() {
  const key = localStorage.getItem(KEY_ITEM);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// One call of the API for the current clip: with its file as the upload when `upload` is set.
async function call(path, r, { method, upload = false } = {}) {
  for (let attempt = 0; ; attempt += 1) {
    let body;
    if (upload) {
      body = new FormData();
      body.append("file", r.file);
    }
    const response = await fetch(path, {
      method: method || (upload ? "POST" : "GET"), body, signal: r.abort.signal,
      headers: authHeaders(),
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

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(new DOMException("aborted", "AbortError"));
    }, { once: true });
  });
}

// The settings as the API's query: frames spread over the clip, working size, quality.
function settingsQuery() {
  const frames = Number($("num-frames").value);
  if (!Number.isInteger(frames) || frames < 2 || frames > 10000) {
    throw failure("Invalid setting", "Frames must be a whole number from 2 to 10000.");
  }
  const query = new URLSearchParams({ num_frames: String(frames), quality: $("quality").value });
  if ($("short-side").value) query.set("short_side", $("short-side").value);
  return query.toString();
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
    if (err.name === "Cancelled") {
      r.pending.clear();
      setStatus("cancelled", `Cancelled: ${r.file.name}.`);
      return;
    }
    showError(err.title || `${label} failed`, err.detail || String(err.message || err));
    return;
  } finally {
    r.pending.delete(label);
  }
  if (r !== run || ["error", "cancelled"].includes($("status").dataset.state)) return;
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

// -- the boxes: from the cache, or from a job with its progress ----------------------------------

// The record the server already holds for this content under these settings, or null. The id is
// the content's SHA-256 (browsers compute it only on secure pages: https or localhost).
async function cachedRecord(r) {
  if (!(window.crypto && crypto.subtle) || r.file.size > HASH_MAX_BYTES) return null;
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", await r.file.arrayBuffer()));
  const hex = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  const response = await fetch(`/v1/boxes/sha256-${hex.slice(0, 32)}?${r.query}`, {
    signal: r.abort.signal, headers: authHeaders(),
  });
  return response.ok ? response.json() : null;
}

function seconds(s) {
  if (s < 60) return `${Math.max(1, Math.round(s))} s`;
  return `${Math.floor(s / 60)} min ${String(Math.round(s % 60)).padStart(2, "0")} s`;
}

function showJob(r, job) {
  const p = job.progress;
  const clip = p.pairs_total ? p.pairs_done / p.pairs_total : 0;
  $("job").hidden = ENDED.has(job.status);
  $("job-progress").value = p.total ? (p.done + p.failed + clip) / p.total : 0;
  let text = `Decoding ${r.file.name}…`;
  if (job.status === "queued") text = "Waiting for a free worker…";
  else if (p.pairs_total) {
    text = `Frame pairs ${p.pairs_done} / ${p.pairs_total}`;
    if (p.eta_s !== null && p.eta_s !== undefined) text += ` · about ${seconds(p.eta_s)} left`;
  }
  $("job-text").textContent = text;
  $("job").dataset.status = job.status;
}

async function jobRecord(r) {
  let job = await (await call(`/v1/jobs?${r.query}`, r, { upload: true })).json();
  r.job = job;
  $("cancel").disabled = false;
  setStatus("working", `Working on ${r.file.name}: motion boxes…`);
  showJob(r, job);
  while (!ENDED.has(job.status)) {
    await sleep(POLL_MS, r.abort.signal);
    job = await (await call(job.status_url, r)).json();
    if (r !== run) return null;
    r.job = job;
    showJob(r, job);
  }
  if (job.status === "cancelled") throw Object.assign(new Error("cancelled"), { name: "Cancelled" });
  if (job.status === "failed") throw failure("Job failed", job.error);
  const [outcome] = job.result;
  if (!outcome.ok) throw failure("Clip failed", outcome.error);
  return outcome.record;
}

async function cancelJob(job, keepalive = false) {
  const response = await fetch(job.status_url, { method: "DELETE", headers: authHeaders(), keepalive });
  if (!response.ok) throw await problem(response);
  return response.json();
}

// -- one file --------------------------------------------------------------------------------

function reset() {
  if (run) {
    if (run.job && !ENDED.has(run.job.status)) cancelJob(run.job).catch(() => {}); // left behind
    run.abort.abort();
    clearTimeout(run.timer);
    run.urls.forEach(URL.revokeObjectURL);
  }
  video.removeAttribute("src");
  video.load();
  $("error").hidden = true;
  $("results").hidden = true;
  $("job").hidden = true;
  $("stage").hidden = false;
  for (const id of ["preview", "motion-map", "fallback-note"]) $(id).hidden = true;
  $("preview").removeAttribute("src");
  $("motion-map").removeAttribute("src");
  $("download").removeAttribute("href");
  $("summary").replaceChildren();
  $("frames").tBodies[0].replaceChildren();
  ctx.clearRect(0, 0, overlay.width, overlay.height);
}

async function handle(file) {
  if (!file) return;
  reset();
  let query;
  try {
    query = settingsQuery();
  } catch (err) {
    run = null;
    showError(err.title, err.detail);
    return;
  }
  $("rerun").hidden = false;
  setStatus("working", `Working on ${file.name}…`); // at once: the state of this file, not the last
  const r = (run = { file, query, record: null, cache: null, job: null,
                     abort: new AbortController(), pending: new Set(), urls: [], timer: 0,
                     fellBack: false });
  await task(r, "motion boxes", async () => {
    let record = await cachedRecord(r);
    r.cache = record ? "hit" : "miss";
    if (!record) {
      setStatus("working", `Uploading ${file.name}…`);
      record = await jobRecord(r);
    }
    if (r !== run || !record) return;
    r.record = record;
    showRecord(r, record);
    play(r);
    task(r, "motion map", async () => {
      const blob = await (await call(`/v1/motion-map?${r.query}`, r, { upload: true })).blob();
      if (r === run) await blobInto($("motion-map"), r, blob);
    });
  });
}

function showRecord(r, rec) {
  const rows = [
    ["File", r.file.name, "file"],
    ["Video id", rec.video, "video"],
    ["Size", `${rec.width}×${rec.height}`, "size"],
    ["Frame rate", `${rec.fps} fps`, "fps"],
    ["Frames", String(rec.frames.length), "frames"],
    ["Clip box", rec.clip_box ? `[${rec.clip_box.join(", ")}]` : "none", "clip-box"],
    ["Settings", rec.params, "params"],
    ["Cache", r.cache || "unknown", "cache"],
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
  const json = JSON.stringify(rec, null, 2) + "\n";
  const url = URL.createObjectURL(new Blob([json], { type: "application/json" }));
  r.urls.push(url);
  $("download").href = url;
  $("download").download = `${r.file.name.replace(/\.[^.]*$/, "") || "clip"}.boxes.json`;
  $("copy").hidden = !(navigator.clipboard && window.isSecureContext);
  $("copy").onclick = async () => {
    await navigator.clipboard.writeText(json);
    $("copy").textContent = "Copied";
    setTimeout(() => { $("copy").textContent = "Copy JSON"; }, 1500);
  };
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
    const blob = await (await call(`/v1/preview?format=gif&${r.query}`, r, { upload: true })).blob();
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
$("rerun").addEventListener("click", () => { if (run) handle(run.file); });
$("cancel").addEventListener("click", async () => {
  const r = run;
  if (!r || !r.job || ENDED.has(r.job.status)) return;
  $("cancel").disabled = true;
  try {
    const job = await cancelJob(r.job);
    if (r === run) { r.job = job; showJob(r, job); }
  } catch (err) {
    if (r === run) showError(err.title || "Cancel failed", err.detail || String(err.message || err));
  }
});
// A job of this page left running when the page goes away is cancelled.
window.addEventListener("pagehide", () => {
  if (run && run.job && !ENDED.has(run.job.status)) cancelJob(run.job, true).catch(() => {});
});
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
