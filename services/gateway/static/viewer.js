/* planzoom's plan viewer: a strip of pages and an OpenSeadragon deep-zoom
 * view of the selected one.
 *
 * config.mode "live": the job is read from the gateway (config.api) with the
 * bearer token given in the URL fragment (#token=...; kept in this tab's
 * sessionStorage and removed from the address bar). Changes arrive as
 * Server-Sent Events read with fetch (EventSource cannot send a header) and
 * resumed with Last-Event-ID: the whole record first, then deltas (the
 * record's fields and the pages that changed), so a 2,000-page set costs
 * a few kB a change, not its whole record. Descriptors and tiles load with the token in
 * an Authorization header; thumbnails and the download use a signed link.
 * config.mode "static": config.job is a manifest.json and config.base the
 * folder of its .dzi files (an exported job opened from disk).
 *
 * Until a page is DONE, the view shows its overview (a low level of its
 * pyramid, made for every page of a set ahead of the full-resolution work)
 * and the strip its thumbnail; the deep zoom replaces the overview when the
 * page is done.
 *
 * A video job shows its HLS preview instead, played by hls.js (Safari:
 * natively) from the gateway's /video/ route with a signed link.
 *
 * Sheets (PDF sets, once the job has ended): the strip labels each page
 * "A-201 · Second floor plan" (the sheet index, docs/sheets.md) and flags
 * those whose number needs a person's review; a box goes to a sheet by
 * number (with completion), a list filters the strip by discipline. A
 * search (GET /v1/search; an export: the words it carries inline)
 * highlights its hits on the sheet and steps through them across sheets. Callouts to other sheets ("3/A-501")
 * are hotspots that open their sheet; the header lists the sheets that
 * refer to the one shown.
 *
 * Keys: PageDown / PageUp / n / p (or arrows on the strip) change page,
 * Home / End go to the first / last page.
 */
"use strict";

function planzoomViewer(element, config) {
  const $ = (id) => document.getElementById(id);
  const CSS_PX_PER_INCH = 96;
  let job = null, selected = 0, links = null, viewer = null, hls = null;
  let shown = "";  // what the view shows: "<page>:dzi", "<page>:overview" or ""
  const VIDEO_KINDS = ["mp4", "mov", "mkv", "webm", "avi"];
  const isVideo = () => job && VIDEO_KINDS.includes(job.source_kind);
  const videoUrl = (file) => links ? `${config.api}/jobs/${config.jobId}/video/${file}?cap=${links.cap}` : null;
  const items = [];  // one button per page
  let sheets = null;  // page -> sheet (number, title, references, ...), once known
  let hits = [], hit = -1;  // search hits across the set, and the one shown

  // #source=archive: a job of layout ARCHIVE is read straight from the
  // bucket or CDN that holds its pages' archives (presigned URLs from the
  // links), by range requests, not through the gateway.
  const fromArchives = /[#&]source=archive(&|$)/.test(location.hash);
  const token = (() => {
    if (config.mode !== "live") return null;
    const m = location.hash.match(/token=([^&]+)/);
    if (m) {
      sessionStorage.setItem("planzoom-token", decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem("planzoom-token");
  })();
  const headers = token ? {Authorization: "Bearer " + token} : {};

  viewer = OpenSeadragon({
    element, prefixUrl: config.static + "/vendor/openseadragon/images/",
    showNavigator: true, navigatorPosition: "BOTTOM_RIGHT", maxZoomPixelRatio: 4,
    loadTilesWithAjax: !!token, ajaxHeaders: headers, crossOriginPolicy: false,
    // From file:// every tile is cross-origin, which WebGL refuses to draw.
    drawer: location.protocol === "file:" ? "canvas" : ["webgl", "canvas"],
    gestureSettingsMouse: {clickToZoom: false}, keyboardShortcuts: true,
  });
  viewer.addHandler("animation", showZoom);
  viewer.addHandler("open", showZoom);
  viewer.addHandler("open", drawOverlays);
  const revisions = planzoomRevisions({viewer, $, config, api, job: () => job, sheetOf, rect,
                                       redraw: drawOverlays});
  window.planzoom = {viewer, get job() { return job; }, get page() { return selected; }, select,
                     get hls() { return hls; }, get shown() { return shown; },
                     get sheets() { return sheets; }, get hits() { return hits; },
                     search, goToSheet, revisions: revisions.state};

  function pageState(p) { return (p.state || "").replace("PAGE_STATE_", "").toLowerCase(); }
  function done(p) { return pageState(p) === "done"; }
  function variant(p, name) { return (p.variants || []).find(v => v.name === name); }
  function variantUrl(n, name) {
    const file = `${n}.${name}.jpg`;
    if (config.mode !== "live") return `${config.base}page-${file}`;
    return links ? `${config.api}/jobs/${config.jobId}/pages/${file}?cap=${links.cap}` : null;
  }
  // What the selected page's view can show now: its deep zoom once done,
  // its overview before.
  function viewable(n) {
    const p = job.pages[n - 1];
    if (done(p)) return `${n}:dzi`;
    return !isVideo() && variant(p, "overview") && variantUrl(n, "overview") ? `${n}:overview` : "";
  }

  function dziUrl(n) {
    return config.mode === "live" ? `${config.api}/jobs/${config.jobId}/pages/${n}.dzi`
                                  : `${config.base}page-${n}.dzi`;
  }
  // A page's archive (PMTiles v3, DZI level L = zoom L) read with the
  // pmtiles package: one range request per tile once its directory is in.
  function archiveSource(n, url) {
    const p = job.pages[n - 1], archive = new pmtiles.PMTiles(url);
    const source = new OpenSeadragon.DziTileSource(p.width_px, p.height_px, p.tile_size,
                                                   p.overlap, url, p.format);
    source.getTileUrl = (level, x, y) => `${url}#${level}/${x}/${y}`;
    source.downloadTileStart = (context) => {
      const [level, x, y] = context.src.split("#").pop().split("/").map(Number);
      archive.getZxy(level, x, y).then((tile) => {
        if (!tile) { context.fail("no such tile in the archive", null); return; }
        context.finish(new Blob([tile.data], {type: `image/${p.format === "jpg" ? "jpeg" : p.format}`}),
                       null, "rasterBlob");
      }, (e) => context.fail(`archive read failed: ${e}`, null));
    };
    source.downloadTileAbort = () => {};
    return source;
  }
  function tileSource(n) {
    if (config.mode === "live" && fromArchives && links && links.archives)
      return archiveSource(n, links.archives[n - 1]);
    if (config.mode === "live") return dziUrl(n);
    const p = job.pages[n - 1];  // inline: no XML request, so it opens from file:// too
    return {Image: {xmlns: "http://schemas.microsoft.com/deepzoom/2008",
                    Url: `${config.base}page-${n}_files/`, Format: p.format,
                    Overlap: String(p.overlap), TileSize: String(p.tile_size),
                    Size: {Width: String(p.width_px), Height: String(p.height_px)}}};
  }
  function thumbUrl(n) {
    const p = job.pages[n - 1];
    if (isVideo()) return done(p) && config.mode === "live" ? videoUrl("thumbnail.jpg") : null;
    if (variant(p, "thumbnail")) return variantUrl(n, "thumbnail");  // made with the page
    if (!done(p)) return null;
    const longest = Math.max(p.width_px, p.height_px);
    const level = Math.max(0, p.levels - 1 - Math.ceil(Math.log2(Math.max(1, longest / p.tile_size))));
    const path = `page-${n}_files/${level}/0_0.${p.format}`;
    if (config.mode !== "live") return config.base + path;
    return links ? `${config.api}/jobs/${config.jobId}/pages/${n}_files/${level}/0_0.${p.format}?cap=${links.cap}` : null;
  }

  function render() {
    $("title").textContent = `${job.plan.project} / ${job.plan.plan}`;
    const state = (job.state || "").replace("JOB_STATE_", "").toLowerCase();
    $("state").textContent = `${state}${job.queued ? " (queued)" : ""} · ${job.completed_pages}/${job.total_pages} pages` +
      (job.failed_pages ? ` · ${job.failed_pages} failed` : "");
    $("progress").value = job.percent || 0;
    const strip = $("strip");
    job.pages.forEach((p, i) => {
      const n = i + 1;
      let item = items[i];
      if (!item) {
        item = items[i] = document.createElement("button");
        item.className = "page"; item.dataset.page = n; item.tabIndex = -1;
        item.addEventListener("click", () => select(n));
        strip.appendChild(item);
      }
      const st = pageState(p), src = st === "failed" ? null : thumbUrl(n);
      const named = sheetOf(n) ? sheetName(n) : "";
      if (item.dataset.state === st && (item.dataset.src || null) === src &&
          (item.dataset.sheet || "") === named) return;
      item.dataset.sheet = named;
      item.dataset.state = st;
      if (src) item.dataset.src = src; else delete item.dataset.src;
      item.classList.toggle("failed", st === "failed");
      item.replaceChildren();
      if (src) {
        const img = document.createElement("img");
        img.alt = `page ${n}`; img.src = src; item.appendChild(img);
      } else {
        const ph = document.createElement("div");
        ph.className = "placeholder"; ph.textContent = st || "pending"; item.appendChild(ph);
      }
      item.appendChild(stripLabel(n, src && st !== "done" ? st || "pending" : ""));
      if (st === "failed") {
        const reason = document.createElement("div");
        reason.className = "reason"; reason.textContent = p.error || "failed";
        item.appendChild(reason);
      }
    });
    if (!selected) {
      const first = job.pages.findIndex((p, i) => viewable(i + 1));
      if (first >= 0) select(first + 1);
    } else {
      showNotice();
      const now = viewable(selected);
      if (now && shown !== now) open(selected);
    }
    if (links && /complete|failed|cancelled/.test(state)) {
      $("download").href = links.download; $("download").hidden = false;
    }
    // The sheet index is written as the job ends: once its record is final.
    if (/complete|failed/.test(state) && !job.finalizing && sheets === null && !isVideo())
      loadSheets();
  }

  // -- sheets ---------------------------------------------------------------
  // A sheet as the index has it: from sheets.json (live: after the job ends;
  // it has the references) or the record's pages (static: the manifest).
  function sheetOf(n) {
    const s = sheets ? sheets[n] : (job.pages[n - 1] || {}).sheet;
    return s && (s.number || s.title) ? s : null;
  }
  const numberKey = (t) => (t || "").toUpperCase().replace(/[^0-9A-Z]/g, "");
  // "SITE PLAN & ROOF PLAN" reads "Site plan & roof plan"; a title set in
  // mixed case stays as printed.
  function sentence(t) {
    if (!t || t !== t.toUpperCase()) return t || "";
    const low = t.toLowerCase();
    return low.charAt(0).toUpperCase() + low.slice(1);
  }
  function sheetName(n) {
    const s = sheetOf(n);
    if (!s) return "";
    return [s.number, sentence(s.title)].filter(Boolean).join(" · ");
  }
  function stripLabel(n, state) {
    const label = document.createElement("div"), s = sheetOf(n);
    label.className = "label";
    if (s) {
      const num = document.createElement("span");
      num.className = "number"; num.textContent = s.number || "";
      label.append(num, s.number && s.title ? " · " : "", sentence(s.title));
      label.title = `page ${n}` + (s.scale ? ` · ${s.scale}` : "") +
        (s.discipline ? ` · ${s.discipline}` : "");
      if (s.needs_review && s.number) {
        const flag = document.createElement("div");
        flag.className = "review"; flag.textContent = "⚑ check sheet no.";
        flag.title = `read with confidence ${Math.round((s.confidence || 0) * 100)} %`;
        label.appendChild(flag);
      }
    } else {
      label.textContent = `page ${n}`;
    }
    if (state) label.append(` · ${state}`);
    return label;
  }
  async function loadSheets() {
    sheets = {};  // once: not again while it loads
    try {
      const found = config.mode === "live" ? (await api(`/jobs/${config.jobId}/sheets`)).sheets
        : job.pages.map((p) => ({page: p.page, ...(p.sheet || {})}));
      // sheets.json gives boxes as [x, y, w, h]; a manifest's protobuf JSON
      // as {x, y, w, h}.
      const box = (b) => !b ? null : Array.isArray(b) ? b : [b.x || 0, b.y || 0, b.w || 0, b.h || 0];
      for (const s of found) {
        sheets[s.page] = {...s, box: box(s.box),
                          references: (s.references || []).map((r) => ({
                            ...r, box: box(r.box), target_box: box(r.target_box)}))};
      }
    } catch (e) {
      console.warn("no sheet index", e);
      return;
    }
    const numbers = $("sheet-numbers"), disciplines = new Set();
    numbers.replaceChildren();
    for (const s of Object.values(sheets)) {
      if (s.number) {
        const o = document.createElement("option");
        o.value = s.number; o.label = sentence(s.title); numbers.appendChild(o);
      }
      if (s.discipline) disciplines.add(s.discipline);
    }
    const select_ = $("discipline");
    for (const d of [...disciplines].sort()) {
      const o = document.createElement("option"); o.value = o.textContent = d; select_.appendChild(o);
    }
    $("find").hidden = false;
    $("search").hidden = $("search-prev").hidden = $("search-next").hidden =
      config.mode !== "live" && !config.words;
    items.forEach((it) => it.dataset.state = "");
    render();
    drawOverlays();
    showReferenced();
    if (selected) revisions.show(selected);
  }
  function goToSheet(text) {
    const key = numberKey(text);
    if (!key || !sheets) return false;
    const s = Object.values(sheets).find((x) => numberKey(x.number) === key) ||
              Object.values(sheets).find((x) => numberKey(x.number).startsWith(key));
    if (s) select(s.page);
    return !!s;
  }
  function filterDiscipline(d) {
    items.forEach((item, i) => {
      const s = sheetOf(i + 1);
      item.hidden = !!d && !(s && s.discipline === d);
    });
  }
  function showReferenced() {
    const box = $("referenced");
    box.replaceChildren();
    if (!sheets || !selected) { box.hidden = true; return; }
    const from = Object.values(sheets).filter((s) =>
      (s.references || []).some((r) => r.page === selected));
    box.hidden = !from.length;
    if (!from.length) return;
    box.append("referenced from:");
    for (const s of from) {
      const a = document.createElement("a");
      a.href = "#"; a.textContent = s.number || `page ${s.page}`;
      a.addEventListener("click", (e) => { e.preventDefault(); select(s.page); });
      box.appendChild(a);
    }
  }

  // -- overlays: search hits and callouts, in full-resolution pixels --------
  function rect(p, box) {
    const [x, y, w, h] = box, width = p.width_px || 1;
    return new OpenSeadragon.Rect(x / width, y / width, w / width, h / width);
  }
  function drawOverlays() {
    viewer.clearOverlays();
    if (!job || !selected || isVideo() || !viewer.world.getItemCount()) return;
    const p = job.pages[selected - 1], s = sheets && sheets[selected];
    for (const ref of (s && s.references) || []) {
      if (!ref.box) continue;
      const a = document.createElement("a");
      a.className = "callout"; a.href = "#"; a.dataset.page = ref.page;
      a.title = `${ref.text || ref.number}: open sheet ${ref.number}`;
      a.setAttribute("aria-label", a.title);
      // It opens its sheet at the view it names, when that view was found.
      const follow = () => openAt(ref.page, ref.target_box, 3, 6);
      // OpenSeadragon's own click handling would eat the click.
      new OpenSeadragon.MouseTracker({element: a, clickHandler: follow});
      a.addEventListener("keydown", (e) => { if (e.key === "Enter") follow(); });
      viewer.addOverlay(a, rect(p, ref.box));
    }
    hits.forEach((h, i) => {
      if (h.page !== selected) return;
      for (const box of h.boxes) {
        const el = document.createElement("div");
        el.className = "hit" + (i === hit ? " current" : "");
        viewer.addOverlay(el, rect(p, box));
      }
    });
    revisions.draw(selected);
  }

  // -- search ---------------------------------------------------------------
  async function search(q) {
    hits = []; hit = -1;
    $("search-count").textContent = "";
    if (!q.trim()) { drawOverlays(); stepButtons(); return hits; }
    try {
      hits = config.mode === "live"
        ? (await api(`/search?job_id=${encodeURIComponent(config.jobId)}&q=${encodeURIComponent(q)}&limit=500`)).hits
        : localSearch(q);
    } catch (e) {
      $("search-count").textContent = e.message;
      return hits;
    }
    if (!hits.length) { $("search-count").textContent = "no hits"; drawOverlays(); stepButtons(); return hits; }
    // Start at the first hit on or after the page shown.
    const start = hits.findIndex((h) => h.page >= (selected || 1));
    step(start >= 0 ? start : 0);
    return hits;
  }
  // An exported set searches the words its page carries inline
  // (config.words), as the gateway's index matches: case and accents
  // aside, a run of words whose last one is a prefix.
  function fold(t) {
    return t.normalize("NFKD").replace(/\p{M}/gu, "").toLowerCase().replace(/[.,;:]+$/, "");
  }
  function localSearch(q) {
    const terms = q.split(/\s+/).map(fold).filter((t) => /[\p{L}\p{N}]/u.test(t));
    if (!terms.length) throw new Error("nothing to search for");
    const found = [];
    for (const [page, words] of Object.entries(config.words || {})) {
      const folded = words.map((w) => fold(w[0])), n = terms.length;
      for (let i = 0; i + n <= words.length; i++) {
        let ok = true;
        for (let k = 0; k < n - 1 && ok; k++) ok = folded[i + k] === terms[k];
        if (ok && folded[i + n - 1].startsWith(terms[n - 1])) {
          const run = words.slice(i, i + n);
          found.push({page: Number(page), text: run.map((w) => w[0]).join(" "),
                      boxes: run.map((w) => w.slice(1, 5))});
        }
      }
    }
    return found.sort((a, b) => a.page - b.page);
  }
  function step(i) {
    if (!hits.length) return;
    hit = (i + hits.length) % hits.length;
    const h = hits[hit];
    $("search-count").textContent = `${hit + 1} of ${hits.length}`;
    stepButtons();
    openAt(h.page, h.boxes[0], 4, 12);
  }
  // Page n, zoomed on box (full-resolution pixels) with margins of mx box
  // widths and my box heights on each side; the whole page without a box.
  function openAt(n, box, mx, my) {
    const zoomTo = () => {
      drawOverlays();
      if (!box) return;
      const r = rect(job.pages[n - 1], box);
      viewer.viewport.fitBoundsWithConstraints(new OpenSeadragon.Rect(
        r.x - r.width * mx, r.y - r.height * my, r.width * (2 * mx + 1), r.height * (2 * my + 1)));
    };
    if (n !== selected) {
      viewer.addOnceHandler("open", zoomTo);
      select(n);
    } else {
      zoomTo();
    }
  }
  function stepButtons() {
    $("search-prev").disabled = $("search-next").disabled = hits.length < 2;
  }
  $("search").addEventListener("keydown", (e) => {
    if (e.key !== "Enter") return;
    e.preventDefault();
    if (hits.length && e.target.dataset.q === e.target.value) step(hit + (e.shiftKey ? -1 : 1));
    else { e.target.dataset.q = e.target.value; search(e.target.value); }
  });
  $("search-next").addEventListener("click", () => step(hit + 1));
  $("search-prev").addEventListener("click", () => step(hit - 1));
  $("goto").addEventListener("change", (e) => goToSheet(e.target.value));
  $("goto").addEventListener("keydown", (e) => { if (e.key === "Enter") goToSheet(e.target.value); });
  $("discipline").addEventListener("change", (e) => filterDiscipline(e.target.value));

  function select(n) {
    if (!job || n < 1 || n > job.pages.length) return;
    selected = n;
    items.forEach((item, i) => item.setAttribute("aria-current", String(i + 1 === n)));
    items[n - 1].scrollIntoView({block: "nearest"});
    const p = job.pages[n - 1];
    if (isVideo()) {
      const v = p.video || {};
      $("sheet").textContent = `${(v.duration_seconds || 0).toFixed(1)} s · ` +
        (v.renditions || []).map((r) => r.name).join(" / ");
      showNotice();
      if (done(p)) open(n);
      return;
    }
    $("sheet").textContent = (sheetOf(n) ? `${sheetName(n)} · ` : "") + (p.width_pt ?
      `${(p.width_pt / 72).toFixed(1)} × ${(p.height_pt / 72).toFixed(1)} in · ${Math.round(p.dpi || 0)} DPI` +
      (p.width_px ? ` · ${p.width_px} × ${p.height_px} px` : "") : "");
    showReferenced();
    showNotice();
    revisions.show(n);
    if (viewable(n)) open(n); else { viewer.close(); shown = ""; }
  }

  function open(n) {
    shown = viewable(n);
    if (shown.endsWith(":overview")) {
      viewer.open({type: "image", url: variantUrl(n, "overview"), buildPyramid: false});
      return;
    }
    if (!isVideo()) { viewer.open(tileSource(n)); return; }
    const video = $("video"), url = videoUrl("master.m3u8");
    if (!url || hls) return;
    $("osd").hidden = true; video.hidden = false;
    $("scalebar").hidden = true; $("zoom").hidden = true;  // paper scale means nothing here
    video.poster = videoUrl("poster.jpg");
    if (window.Hls && Hls.isSupported()) {
      hls = new Hls();
      hls.on(Hls.Events.ERROR, (_, data) => { if (data.fatal) fail(new Error(`video: ${data.details}`)); });
      hls.loadSource(url);
      hls.attachMedia(video);
    } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
      video.src = url;
    } else {
      fail(new Error("this browser cannot play HLS"));
    }
  }

  function showNotice() {
    const p = job.pages[selected - 1], notice = $("notice");
    const st = pageState(p);
    notice.hidden = st === "done";
    notice.textContent = st === "failed" ? `Page ${selected} failed: ${p.error || "no reason given"}`
      : variant(p, "overview") ? `Overview of page ${selected}: full resolution on its way (${st || "pending"})…`
      : `Page ${selected} is ${st || "pending"}…`;
  }

  function showZoom() {
    const p = job && job.pages[selected - 1];
    if (!p || !viewer.world.getItemCount()) { $("zoom").textContent = ""; return; }
    // Image pixels per screen pixel, then screen pixels per inch of paper.
    const imageZoom = viewer.viewport.viewportToImageZoom(viewer.viewport.getZoom(true));
    const overview = shown.endsWith(":overview") && variant(p, "overview");
    const dpi = (overview ? overview.dpi : p.dpi) || 1;
    const pxPerPaperInch = imageZoom * dpi;
    $("zoom").textContent = `${Math.round(100 * pxPerPaperInch / CSS_PX_PER_INCH)}% of paper size`;
    // Scale bar: the round paper length whose bar is 60-150 screen px long.
    const steps = [0.0625, 0.125, 0.25, 0.5, 1, 2, 4, 6, 12, 24, 48];
    const inches = steps.find((s) => s * pxPerPaperInch >= 60) || steps[steps.length - 1];
    $("scalebar-line").style.width = `${Math.round(inches * pxPerPaperInch)}px`;
    $("scalebar-label").textContent = inches >= 1 ? `${inches} in on paper` : `1/${1 / inches} in on paper`;
  }

  document.addEventListener("keydown", (e) => {
    if (!job || e.altKey || e.ctrlKey || e.metaKey) return;
    if (/^(INPUT|SELECT|TEXTAREA)$/.test(document.activeElement.tagName)) return;
    const inStrip = document.activeElement === $("strip");
    const moves = {PageDown: 1, PageUp: -1, n: 1, p: -1};
    if (inStrip) Object.assign(moves, {ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1});
    let target = null;
    if (e.key in moves) target = (selected || 1) + moves[e.key];
    else if (e.key === "Home") target = 1;
    else if (e.key === "End") target = job.pages.length;
    if (target !== null) { e.preventDefault(); select(Math.min(job.pages.length, Math.max(1, target))); }
  });

  async function api(path) {
    const resp = await fetch(config.api + path, {headers});
    if (!resp.ok) {
      let detail = resp.statusText;
      try { detail = (await resp.json()).detail || detail; } catch (_) { /* not a problem document */ }
      throw new Error(`${resp.status}: ${detail}`);
    }
    return resp.json();
  }

  async function refreshLinks() {
    links = await api(`/jobs/${config.jobId}/links`);
    const ms = Math.max(10_000, (Date.parse(links.expires_at) - Date.now()) / 2);
    setTimeout(() => refreshLinks().then(() => { items.forEach((it) => it.dataset.state = ""); render(); })
                                   .catch(fail), ms);
  }

  // Server-Sent Events over fetch, so the token goes in a header.
  async function follow() {
    let lastId = "";
    for (let attempt = 0; ; attempt++) {
      try {
        const resp = await fetch(`${config.api}/jobs/${config.jobId}/events?deltas=true`,
          {headers: {...headers, ...(lastId ? {"Last-Event-ID": lastId} : {})}});
        if (!resp.ok) return fail(new Error(`${resp.status}: ${(await resp.json()).detail}`));
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "", raw = "";
        for (;;) {
          const {value, done: ended} = await reader.read();
          if (ended) break;
          // Any of the three line ends SSE allows; a CR at a chunk's end may
          // be the first half of a CRLF, so it waits for the next chunk.
          raw += value;
          if (raw.endsWith("\r")) continue;
          buffer += raw.replace(/\r\n?/g, "\n");
          raw = "";
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
            let event = "message", data = "", id = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("event:")) event = line.slice(6).trim();
              else if (line.startsWith("data:")) data += line.slice(5).trim();
              else if (line.startsWith("id:")) id = line.slice(3).trim();
            }
            if (event === "job" && data) { job = JSON.parse(data); lastId = id || lastId; render(); attempt = 0; }
            else if (event === "delta" && data && job) {
              const delta = JSON.parse(data), pages = job.pages;
              for (const p of delta.pages) pages[p.page - 1] = p;
              job = {...delta, pages}; lastId = id || lastId; render(); attempt = 0;
            }
            else if (event === "problem" && data) fail(new Error(JSON.parse(data).detail));
          }
        }
        if (job && /COMPLETE|FAILED|CANCELLED/.test(job.state)) return;
      } catch (e) {
        console.warn("event stream broke, reconnecting", e);
      }
      await new Promise((r) => setTimeout(r, Math.min(10_000, 500 * 2 ** attempt)));
    }
  }

  function fail(error) {
    $("state").textContent = `error: ${error.message}`;
  }

  if (config.mode === "live") {
    if (!token) { fail(new Error("no token: open this page as /view/JOB#token=<bearer token>")); return; }
    refreshLinks().then(follow).catch(fail);
  } else {
    job = config.job; render();
    if (job.pages.some((p) => p.sheet)) loadSheets();
  }
}
