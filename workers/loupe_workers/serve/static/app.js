// loupe serve: one page, routed by the URL hash; every value from the store is set as text, never as HTML.
"use strict";

const CHOICES = ["split", "label", "disposition", "reason", "flag"];
const MEASURES = ["sharpness", "noise", "brightness_p99", "brightness_p5", "clipped", "contrast", "tonal_range", "black_level", "entropy",
  "aspect_ratio", "width", "height", "size"];
const PAGE = 60;
let datasets = [];
let facetsCache = new Map();

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

async function api(path) {
  const response = await fetch(path);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  return { path: path || "grid", params: new URLSearchParams(query || "") };
}

function go(path, params) {
  location.hash = "#/" + path + "?" + params.toString();
}

function versionBase(d, v) {
  return `/api/datasets/${encodeURIComponent(d)}/versions/${encodeURIComponent(v)}`;
}

function current(params) {
  const d = params.get("d") || (datasets[0] && datasets[0].name);
  const info = datasets.find((x) => x.name === d);
  const versions = info ? info.versions.map((x) => x.version) : [];
  const v = params.get("v") || versions[versions.length - 1];
  return { d, v, versions };
}

function fmt(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(4);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function sampleHref(d, v, ref) {
  return "#/sample?" + new URLSearchParams({ d, v, ref }).toString();
}

function card(d, v, c, extra) {
  const name = c.frame_index === null || c.frame_index === undefined ? c.key : `${c.key} #${c.frame_index}`;
  return el("div", { class: "card", "data-ref": c.ref, "data-disposition": c.disposition },
    el("a", { href: sampleHref(d, v, c.ref) },
      el("img", { loading: "lazy", alt: name, src: `${versionBase(d, v)}/samples/${c.ref}/thumb` }),
      el("div", { class: "key" }, name)),
    el("span", { class: "badge " + c.disposition }, c.disposition),
    c.reason ? el("span", { class: "badge reason" }, c.reason) : null,
    c.split ? el("span", { class: "badge" }, c.split) : null,
    c.label ? el("span", { class: "badge" }, c.label) : null,
    (c.flags || []).map((f) => el("span", { class: "badge flag" }, f)),
    c.detail ? el("div", { class: "why detail" }, c.detail) : null,
    c.score !== null && c.score !== undefined ? el("div", { class: "why score" }, `score ${c.score.toFixed(3)}`) : null,
    extra || null);
}

async function facets(d, v) {
  const key = d + "@" + v;
  if (!facetsCache.has(key)) facetsCache.set(key, await api(`${versionBase(d, v)}/facets`));
  return facetsCache.get(key);
}

function syncHeader(d, v, versions) {
  const ds = document.getElementById("dataset");
  ds.replaceChildren(...datasets.map((x) => el("option", { value: x.name, selected: x.name === d }, x.name)));
  const vs = document.getElementById("version");
  vs.replaceChildren(...[...versions].reverse().map((x) => el("option", { value: x, selected: x === v }, x)));
  const base = new URLSearchParams({ d, v });
  document.getElementById("nav-grid").href = "#/grid?" + base;
  const left = new URLSearchParams(base);
  left.append("disposition", "rejected");
  left.append("disposition", "quarantined");
  document.getElementById("nav-leftout").href = "#/grid?" + left;
  document.getElementById("nav-groups").href = "#/groups?" + base;
  const older = versions.length > 1 ? versions[versions.length - 2] : v;
  document.getElementById("nav-diff").href = "#/diff?" + new URLSearchParams({ d, a: older, b: v });
}

// --- the grid -----------------------------------------------------------------------------------

function choice(name, counts, params) {
  const chosen = params.getAll(name);
  const options = [el("option", { value: "" }, "any")];
  for (const [value, n] of Object.entries(counts)) options.push(el("option", { value, selected: chosen.includes(value) }, `${value} (${n})`));
  if (chosen.length > 1) options.push(el("option", { value: "__many", selected: true }, chosen.join(" or ")));
  return el("label", {}, name, el("select", { id: "f-" + name, "data-filter": name }, options));
}

async function grid(params) {
  const { d, v } = current(params);
  const f = await facets(d, v);
  const form = el("form", { class: "filters", id: "filters" },
    choice("split", f.splits, params), choice("label", f.labels, params), choice("disposition", f.dispositions, params),
    choice("reason", f.reasons, params), choice("flag", f.flags, params));
  const metaField = [...params.keys()].find((k) => k.startsWith("m.")) || "";
  form.append(el("label", {}, "metadata", el("select", { id: "f-meta-field" }, el("option", { value: "" }, "field"),
    Object.keys(f.metadata).map((k) => el("option", { value: k, selected: "m." + k === metaField }, k)))));
  form.append(el("label", {}, "= value", el("input", { id: "f-meta-value", value: metaField ? params.get(metaField) : "" })));
  const measure = MEASURES.find((m) => params.has("min." + m) || params.has("max." + m)) || "sharpness";
  form.append(el("label", {}, "measure", el("select", { id: "f-measure" },
    MEASURES.filter((m) => f.measures[m]).map((m) => el("option", { value: m, selected: m === measure },
      `${m} (${fmt(f.measures[m].low)}–${fmt(f.measures[m].high)})`)))));
  form.append(el("label", {}, "min", el("input", { id: "f-min", type: "number", step: "any", value: params.get("min." + measure) || "" })));
  form.append(el("label", {}, "max", el("input", { id: "f-max", type: "number", step: "any", value: params.get("max." + measure) || "" })));
  form.append(el("label", {}, "text search", el("input", { id: "f-text", placeholder: "e.g. cat", value: params.get("text") || "" })));
  form.append(el("label", {}, "search by image", el("input", { id: "f-image", type: "file", accept: "image/*", onchange: upload })));
  form.append(el("button", { type: "submit", id: "apply" }, "apply"));
  form.append(el("a", { href: "#/grid?" + new URLSearchParams({ d, v }) }, "clear"));
  form.addEventListener("change", (event) => { if (event.target.tagName === "SELECT" && event.target.dataset.filter) apply(); });
  form.addEventListener("submit", (event) => { event.preventDefault(); apply(); });
  async function upload(event) {
    const file = event.target.files[0];
    if (!file) return;
    const response = await fetch("/api/uploads", { method: "POST", body: file });
    const body = await response.json();
    if (!response.ok) { alert(body.error || response.statusText); return; }
    go("grid", new URLSearchParams({ d, v, image: body.id }));
  }
  function apply() {
    const next = new URLSearchParams({ d, v });
    for (const name of CHOICES) {
      const value = document.getElementById("f-" + name).value;
      if (value === "__many") params.getAll(name).forEach((x) => next.append(name, x));
      else if (value) next.append(name, value);
    }
    const field = document.getElementById("f-meta-field").value;
    if (field) next.set("m." + field, document.getElementById("f-meta-value").value);
    const m = document.getElementById("f-measure").value;
    const lo = document.getElementById("f-min").value, hi = document.getElementById("f-max").value;
    if (lo !== "") next.set("min." + m, lo);
    if (hi !== "") next.set("max." + m, hi);
    const text = document.getElementById("f-text").value.trim();
    if (text) next.set("text", text);
    if (params.get("like")) next.set("like", params.get("like"));
    if (params.get("image")) next.set("image", params.get("image"));
    if (params.get("limit")) next.set("limit", params.get("limit"));
    go("grid", next);
  }
  const offset = Number(params.get("offset") || 0);
  const size = Number(params.get("limit") || PAGE);
  const query = new URLSearchParams(params);
  query.delete("d"); query.delete("v");
  query.set("offset", String(offset)); query.set("limit", String(size));
  const page = await api(`${versionBase(d, v)}/samples?${query}`);
  const first = page.total ? page.offset + 1 : 0;
  const last = page.offset + page.items.length;
  const count = el("span", { id: "count", "data-total": page.total, "data-version-total": page.version_total,
    "data-offset": page.offset, "data-shown": page.items.length },
    `${first}–${last} of ${page.total} matching (${page.version_total} rows in ${d}@${v})`);
  const pager = (label, id, to, enabled) => el("button", { id, disabled: !enabled, onclick: () => {
    const next = new URLSearchParams(params); next.set("offset", String(to)); go("grid", next); } }, label);
  const bar = el("div", { class: "bar" }, pager("← previous", "prev", Math.max(0, offset - size), offset > 0), count,
    pager("next →", "next", offset + size, last < page.total),
    params.get("like") || params.get("image") ? el("span", { class: "why", id: "ranked" }, "ranked by similarity to an image") : null);
  const items = page.items.length ? el("div", { class: "grid", id: "grid" }, page.items.map((c) => card(d, v, c)))
    : el("p", { class: "empty", id: "grid" }, "no sample matches");
  return [form, bar, items];
}

// --- one sample ---------------------------------------------------------------------------------

function table(id, rows) {
  return el("table", { id }, rows.map(([k, v, attrs]) => el("tr", attrs || {}, el("th", {}, k), el("td", { class: "value" }, fmt(v)))));
}

async function sample(params) {
  const { d, v } = current(params);
  const base = versionBase(d, v);
  const s = await api(`${base}/samples/${encodeURIComponent(params.get("ref") || "")}`);
  const c = s.card;
  const viewer = el("div", { class: "viewer", id: "viewer" });
  const browserFormats = ["jpeg", "png", "webp", "gif", "bmp"];
  const large = browserFormats.includes(c.format) ? `${base}/samples/${c.ref}/image` : `${base}/samples/${c.ref}/thumb?size=1024`;
  const img = el("img", { id: "picture", alt: c.key, src: large });
  img.addEventListener("error", () => { img.src = `${base}/samples/${c.ref}/thumb?size=1024`; });
  viewer.append(img);
  if (s.boxes.length && c.width && c.height) {
    const overlay = svg("svg", { id: "boxes", viewBox: `0 0 ${c.width} ${c.height}`, preserveAspectRatio: "none" });
    for (const b of s.boxes) {
      overlay.append(svg("rect", { x: b.x, y: b.y, width: b.width, height: b.height, "data-category": b.category }));
      overlay.append(svg("text", { x: b.x + 3, y: Math.max(14, b.y - 3) }, b.category));
    }
    viewer.append(overlay);
  }
  const gate = c.disposition === "accepted" ? "accepted: passed every gate"
    : `${c.disposition}: ${c.reason || ""}${c.detail ? " — " + c.detail : ""}`;
  const lineage = s.lineage;
  const info = el("div", {},
    el("h2", { id: "title" }, c.key + (c.frame_index !== null ? ` #${c.frame_index}` : "")),
    el("p", { id: "gate", class: "badge " + c.disposition, "data-disposition": c.disposition, "data-reason": c.reason || "" }, gate),
    el("p", {}, "flags: ", c.flags.length ? c.flags.map((f) => el("span", { class: "badge flag" }, f)) : "none"),
    el("h3", {}, "Measures"),
    table("measures", Object.entries(s.measures).map(([k, x]) => [k, x, { "data-measure": k, "data-value": x === null ? "" : x }])),
    el("h3", {}, "Labels"),
    table("labels", [["label", c.label], ["split", c.split], ["boxes", s.boxes.map((b) => `${b.category} [${[b.x, b.y, b.width, b.height].join(", ")}]`).join("; ") || "none"]]),
    el("h3", {}, "Metadata"),
    Object.keys(s.metadata).length ? table("metadata", Object.entries(s.metadata)) : el("p", { class: "empty", id: "metadata" }, "none"),
    el("p", {}, el("a", { href: "#/grid?" + new URLSearchParams({ d, v, like: c.ref }) }, "similar images")));
  const lineageRows = [["source", lineage.source], ["key", lineage.key], ["raw object", lineage.uri], ["etag", lineage.etag],
    ["size (bytes)", lineage.size], ["sha256", lineage.sha256, { id: "sha256" }], ["stored blob", lineage.blob],
    ["media", lineage.media], ["format", c.format], ["extension", s.extension], ["width × height", `${c.width} × ${c.height}`]];
  if (lineage.frame_index !== null) lineageRows.push(["frame", `${lineage.frame_index} at ${lineage.frame_time}s of ${lineage.video_sha256}`]);
  const parts = [el("div", { class: "columns" }, el("section", {}, viewer), el("section", {}, info)),
    el("section", {}, el("h2", {}, "Lineage"), table("lineage", lineageRows),
      el("h3", {}, "Raw object → sample → version"),
      table("edges", lineage.edges.map((e) => [`${e.version} (${e.disposition})`, `${e.uri} → ${e.raw_sha256.slice(0, 12)} → ${e.blob}`])))];
  if (s.group) parts.push(el("section", { id: "sample-group" }, el("h2", {}, "Duplicate group"), groupView(d, v, s.group)));
  if (Object.keys(s.exif).length) parts.push(el("section", {}, el("h2", {}, "EXIF"), table("exif", Object.entries(s.exif))));
  parts.push(el("section", {}, el("h2", {}, "Other columns"), table("columns", Object.entries(s.columns))));
  return parts;
}

// --- duplicates ---------------------------------------------------------------------------------

function groupView(d, v, g) {
  const kept = g.kept ? card(d, v, g.kept, el("div", { class: "why keep-reason" }, "kept: " + (g.keep_reason || "")))
    : el("div", { class: "card empty" }, "kept copy not in this version");
  if (g.kept) kept.classList.add("kept");
  const members = g.members.map((m) => {
    const why = `${m.kind || "duplicate"}${m.distance !== null ? `, hash distance ${m.distance} bits` : ""}`;
    const node = card(d, v, m.card, el("div", { class: "why member-why" }, why));
    node.classList.add("member");
    return node;
  });
  const more = g.members_total > g.members.length ? el("p", { class: "why" }, `and ${g.members_total - g.members.length} more`) : null;
  return el("div", { class: "group", "data-group": g.group }, kept, members, more);
}

async function groups(params) {
  const { d, v } = current(params);
  const offset = Number(params.get("offset") || 0);
  const page = await api(`${versionBase(d, v)}/groups?offset=${offset}&limit=20`);
  const next = new URLSearchParams(params);
  const bar = el("div", { class: "bar" },
    el("button", { id: "prev", disabled: offset <= 0, onclick: () => { next.set("offset", String(Math.max(0, offset - 20))); go("groups", next); } }, "← previous"),
    el("span", { id: "count", "data-total": page.total }, `${page.total ? offset + 1 : 0}–${offset + page.items.length} of ${page.total} groups of duplicates`),
    el("button", { id: "next", disabled: offset + page.items.length >= page.total, onclick: () => { next.set("offset", String(offset + 20)); go("groups", next); } }, "next →"));
  const list = page.items.map((g) => el("section", {}, el("h3", {}, `group ${g.group}: kept copy and ${g.members_total} duplicate(s)`), groupView(d, v, g)));
  return [bar, ...(list.length ? list : [el("p", { class: "empty" }, "no duplicates in this version")])];
}

// --- diff ---------------------------------------------------------------------------------------

async function diff(params) {
  const { d, versions } = current(params);
  const b = params.get("b") || versions[versions.length - 1];
  const a = params.get("a") || versions[Math.max(0, versions.length - 2)];
  const pick = (id, chosen) => el("select", { id, onchange: () => {
    go("diff", new URLSearchParams({ d, a: document.getElementById("diff-a").value, b: document.getElementById("diff-b").value })); } },
  versions.map((x) => el("option", { value: x, selected: x === chosen }, x)));
  const head = el("div", { class: "bar" }, "from ", pick("diff-a", a), " to ", pick("diff-b", b));
  const r = await api(`/api/datasets/${encodeURIComponent(d)}/diff?` + new URLSearchParams({ a, b }));
  const part = (kind, version, title) => el("section", { id: "diff-" + kind, "data-count": r.counts[kind] },
    el("h2", {}, `${title}: ${r.counts[kind]}${r.counts[kind] > r[kind].length ? ` (first ${r[kind].length} shown)` : ""}`),
    r[kind].length ? el("div", { class: "grid" }, r[kind].map((c) => card(d, version, c,
      kind === "relabeled" ? el("div", { class: "why was" }, `was ${r.previous_labels[c.ref] || "unlabelled"}`) : null))) : el("p", { class: "empty" }, "none"));
  return [head, el("p", { id: "diff-summary" }, `${d}@${r.a} → ${d}@${r.b}: ${r.unchanged} samples in both`),
    part("added", r.b, "Added"), part("removed", r.a, "Removed"), part("relabeled", r.b, "Relabelled"), part("resplit", r.b, "Moved between splits")];
}

// --- start --------------------------------------------------------------------------------------

let generation = 0;

async function render() {
  const mine = ++generation;  // a newer route wins over a slower, older one
  const { path, params } = route();
  const main = document.getElementById("main");
  let nodes;
  try {
    if (!datasets.length) datasets = await api("/api/datasets");
    if (!datasets.length) {
      nodes = [el("p", { class: "empty" }, "this store has no versions yet: run loupe run -f loupe.yaml")];
    } else {
      const { d, v, versions } = current(params);
      syncHeader(d, v, versions);
      const pages = { grid, sample, groups, diff };
      nodes = await (pages[path] || grid)(params);
    }
  } catch (error) {
    nodes = [el("p", { class: "error", id: "error" }, String(error.message || error))];
  }
  if (mine !== generation) return;
  main.replaceChildren(...nodes);
  document.body.dataset.page = path;
  document.body.dataset.route = location.hash;
}

document.getElementById("dataset").addEventListener("change", (event) => go("grid", new URLSearchParams({ d: event.target.value })));
document.getElementById("version").addEventListener("change", (event) => {
  const { path, params } = route();
  const next = new URLSearchParams({ d: document.getElementById("dataset").value, v: event.target.value });
  if (path === "groups") go("groups", next); else go("grid", next);
  void params;
});
window.addEventListener("hashchange", render);
render();
