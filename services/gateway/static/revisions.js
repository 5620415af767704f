/*
 * planzoom viewer: a revised sheet over its previous version
 * (docs/revisions.md). For a page whose sheet revises an earlier one
 * (sheets.json's "change": "revised"), a toggle lays the overlay's Deep Zoom
 * pyramid (GET /v1/jobs/{id}/pages/{n}/overlay: previous version red, this
 * one blue, both grey) over the sheet, a slider sets its opacity, and the
 * changes are clouded on the sheet. "versions" lists the sheet's versions in
 * its plan (GET /v1/plans/{org}/{project}/{plan}/sheets), each opening its
 * job in the viewer.
 *
 * planzoomRevisions(ctx) → {show(n), draw(n), state}; ctx gives the
 * viewer's OpenSeadragon viewer, api(path), config, $, job(), sheetOf(n),
 * rect(page, box) and redraw() (the sheet's overlays drawn again).
 */
function planzoomRevisions(ctx) {
  const {viewer, $} = ctx;
  let page = 0, doc = null, item = null, retry = null, plan = null, versionsAsked = 0;
  const state = {get overlay() { return doc; }, get shown() { return !!item; }};

  $("overlay-toggle").addEventListener("change", () => toggle($("overlay-toggle").checked));
  $("overlay-opacity").addEventListener("input", () => {
    if (item) item.setOpacity($("overlay-opacity").value / 100);
  });
  // A new page opened in the view drops what was laid over the old one.
  viewer.addHandler("open", () => { item = null; if ($("overlay-toggle").checked) toggle(true); });

  function show(n) {
    page = n; doc = null; item = null; clearTimeout(retry);
    const s = ctx.sheetOf(n) || {}, box = $("revision");
    box.hidden = !(s.change === "revised" || s.change === "unchanged");
    $("overlay-toggle").checked = false;
    // The overlay is served by the gateway: an exported set only says what changed.
    const live = ctx.config.mode === "live";
    $("overlay-controls").hidden = s.change !== "revised" || !live;
    $("overlay-opacity").disabled = true;
    $("overlay-status").textContent = s.change === "unchanged" || !live ? s.change || "" : "";
    versions(n);
  }

  async function toggle(on) {
    clearTimeout(retry);
    if (!on) {
      if (item) viewer.world.removeItem(item);
      item = null; $("overlay-opacity").disabled = true; ctx.redraw(); return;
    }
    const n = page;
    try {
      doc = await ctx.api(`/jobs/${ctx.config.jobId}/pages/${n}/overlay`);
    } catch (e) {
      if (String(e.message).startsWith("409")) {
        $("overlay-status").textContent = "overlay being made…";
        retry = setTimeout(() => toggle($("overlay-toggle").checked), 2000);
      } else {
        $("overlay-status").textContent = `no overlay (${e.message})`;
      }
      return;
    }
    if (n !== page || !$("overlay-toggle").checked || item) return;
    $("overlay-status").textContent = `${doc.changes.length} change${doc.changes.length === 1 ? "" : "s"}`;
    viewer.addTiledImage({
      // Named by the version it lies over (the route's "dzi", under /v1).
      tileSource: ctx.config.api + doc.dzi.replace(/^\/v1/, ""),
      x: 0, y: 0, width: 1, opacity: $("overlay-opacity").value / 100,
      // Drawn at fewer pixels than the sheet, over the same extent (width 1).
      success: (e) => { item = e.item; $("overlay-opacity").disabled = false; ctx.redraw(); },
    });
  }

  // Clouds over the changes, in the sheet's full-resolution pixels.
  function draw(n) {
    if (!item || !doc || n !== page) return;
    const p = ctx.job().pages[n - 1];
    for (const c of doc.changes) {
      const el = document.createElement("div");
      el.className = `change ${c.kind}`;
      el.title = `${c.kind} since the previous version`;
      viewer.addOverlay(el, ctx.rect(p, c.box));
    }
  }

  async function versions(n) {
    const list = $("versions");
    list.replaceChildren();
    const asked = ++versionsAsked;  // a later call wins over one still waiting
    const job = ctx.job(), s = ctx.sheetOf(n) || {};
    // Only a sheet with an earlier version has more than one to list.
    if (ctx.config.mode !== "live" || !job || !job.plan ||
        !(s.change === "revised" || s.change === "unchanged")) return;
    try {
      plan = plan || await ctx.api(`/plans/${job.plan.org}/${job.plan.project}/${job.plan.plan}/sheets`);
    } catch (e) {
      return;  // a plan with no complete set yet
    }
    if (n !== page || asked !== versionsAsked) return;
    const sheet = plan.sheets.find((s) => s.versions.some(
      (v) => v.job_id === ctx.config.jobId && v.page === n));
    if (!sheet || sheet.versions.length < 2) return;
    list.append("versions:");
    for (const v of sheet.versions) {
      const here = v.job_id === ctx.config.jobId && v.page === n;
      const el = document.createElement(here ? "strong" : "a");
      // A version is named by its revision mark and date where the title block prints them.
      const issue = [v.revision && `rev ${v.revision}`, v.issued].filter(Boolean).join(" · ");
      el.textContent = `${issue ? `${issue} · ` : ""}${v.job_id.slice(-6)} p${v.page} (${v.change})`;
      el.title = `job ${v.job_id}, page ${v.page}${issue ? `, ${issue}` : ""}: ${v.change}` +
        (v.paired_by && v.paired_by !== "number" ? `, paired by ${v.paired_by}` : "");
      if (!here) el.href = location.pathname.replace(ctx.config.jobId, v.job_id);
      list.append(" ", el);
    }
  }

  return {show, draw, state};
}
