/*
 * Mirador 4 (the npm package pinned in services/gateway/web/, its UMD build
 * copied to static/vendor/mirador/) opening one IIIF manifest: the one named
 * by ?manifest=<url> of /iiif/3/mirador/view. The manifest's ids carry the
 * job's signed link, so Mirador needs no header; the page itself holds no
 * data. The instance is window.planzoomMirador (its store, for tests).
 */
(function () {
  "use strict";
  const manifest = new URLSearchParams(window.location.search).get("manifest");
  const root = document.getElementById("mirador");
  if (!manifest) {
    root.textContent = "Open /iiif/3/mirador/view?manifest=<a manifest URL>.";
    return;
  }
  window.planzoomMirador = Mirador.viewer({
    id: "mirador",
    windows: [{manifestId: manifest, thumbnailNavigationPosition: "far-bottom",
               sideBarOpen: true, defaultSideBarPanel: "canvas"}],
    window: {allowClose: false, allowMaximize: false, panels: {search: true, annotations: true}},
    workspace: {type: "mosaic"},
    workspaceControlPanel: {enabled: false},
    osdConfig: {maxZoomPixelRatio: 2},
    // The sheets' callouts are "linking" annotations: listed and drawn too.
    annotations: {filteredMotivations: ["oa:commenting", "oa:tagging", "sc:painting",
                                        "commenting", "tagging", "linking"]},
  });
})();
