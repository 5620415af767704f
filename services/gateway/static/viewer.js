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
  window.planzoom = {viewer, get job() { return job; }, get page() { return selected; }, select,
                     get hls() { return hls; }, get shown() { return shown; }};

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
      if (item.dataset.state === st && (item.dataset.src || null) === src) return;
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
      const label = document.createElement("div");
      label.textContent = `page ${n}` + (src && st !== "done" ? ` · ${st || "pending"}` : "");
      item.appendChild(label);
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
  }

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
    $("sheet").textContent = p.width_pt ?
      `${(p.width_pt / 72).toFixed(1)} × ${(p.height_pt / 72).toFixed(1)} in · ${Math.round(p.dpi || 0)} DPI` +
      (p.width_px ? ` · ${p.width_px} × ${p.height_px} px` : "") : "";
    showNotice();
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
  }
}
