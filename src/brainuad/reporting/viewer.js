// brainuad's slice viewer: three planes of volumes embedded in the page (8-bit, gzip, base64),
// an overlay of labelled findings, window/level, overlay opacity, L/R labels, the cursor's
// scanner millimetres; mouse (click, wheel) and keyboard (arrows, page up/down, o). No network,
// no WebGL: 2D canvases only. Data: the JSON in <script id="viewer-data">; see
// reporting/viewer.py for its fields.
(function () {
"use strict";
async function show() {
  const data = JSON.parse(document.getElementById("viewer-data").textContent);
  const [nx, ny, nz] = data.shape;
  async function inflate(b64, type) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    const buffer = await new Response(stream).arrayBuffer();
    return new type(buffer);
  }
  const volumes = {};
  for (const [name, b64] of Object.entries(data.volumes)) {
    volumes[name] = await inflate(b64, Uint8Array);
  }
  const labels = await inflate(data.labels, Uint16Array);
  // the brain that was scored (its outline, on the whole plane; cyan)
  const brain = data.brain ? await inflate(data.brain, Uint8Array) : null;
  // index of voxel (i, j, k): the volume is stored k slowest, i fastest
  const at = (i, j, k) => (k * ny + j) * nx + i;
  const state = {
    i: data.cursor[0], j: data.cursor[1], k: data.cursor[2],
    low: 0, high: 255, opacity: 0.5, overlay: true, outline: true,
    volume: Object.keys(volumes)[0], plane: "axial",
  };
  const colours = data.colours; // label kind -> [r, g, b]
  const kindOf = data.kinds; // label -> kind ("1", "2", ...)
  // a plane: which voxel each canvas pixel shows (radiological: the patient's right on the
  // left; anterior up in axial, superior up in coronal and sagittal, anterior left in sagittal)
  const planes = {
    axial: { w: nx, h: ny, sw: data.spacing[0], sh: data.spacing[1],
      voxel: (x, y) => [nx - 1 - x, ny - 1 - y, state.k], pixel: () => [nx - 1 - state.i, ny - 1 - state.j],
      left: "R", right: "L" },
    coronal: { w: nx, h: nz, sw: data.spacing[0], sh: data.spacing[2],
      voxel: (x, y) => [nx - 1 - x, state.j, nz - 1 - y], pixel: () => [nx - 1 - state.i, nz - 1 - state.k],
      left: "R", right: "L" },
    sagittal: { w: ny, h: nz, sw: data.spacing[1], sh: data.spacing[2],
      voxel: (x, y) => [state.i, ny - 1 - x, nz - 1 - y], pixel: () => [ny - 1 - state.j, nz - 1 - state.k],
      left: "A", right: "P" },
  };
  function value(name, i, j, k) {
    if (name === "difference") {
      return 128 + (volumes[data.difference[1]][at(i, j, k)] - volumes[data.difference[0]][at(i, j, k)]) / 2;
    }
    return volumes[name][at(i, j, k)];
  }
  function draw(canvas, plane, name, zoom) {
    // zoom: null (the whole plane) or [centre x, centre y, half width, half height] in pixels
    const p = planes[plane];
    const [x0, y0, w, h] = zoom ? [zoom[0] - zoom[2], zoom[1] - zoom[3], 2 * zoom[2] + 1, 2 * zoom[3] + 1]
      : [0, 0, p.w, p.h];
    canvas.width = w;
    canvas.height = h;
    const image = canvas.getContext("2d").createImageData(w, h);
    const span = Math.max(state.high - state.low, 1);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const o = 4 * (y * w + x);
        const px = x + x0, py = y + y0;
        image.data[o + 3] = 255;
        if (px < 0 || py < 0 || px >= p.w || py >= p.h) continue;
        const [i, j, k] = p.voxel(px, py);
        let grey = (value(name, i, j, k) - state.low) / span * 255;
        grey = Math.max(0, Math.min(255, grey));
        let rgb = [grey, grey, grey];
        const label = labels[at(i, j, k)];
        if (label && state.overlay && !zoom && name !== "difference") {
          const c = colours[kindOf[label]] || [255, 40, 40];
          rgb = rgb.map((v, n) => v * (1 - state.opacity) + c[n] * state.opacity);
        }
        if (brain && state.outline && !zoom && brain[at(i, j, k)]) {
          const inside = [[1, 0], [-1, 0], [0, 1], [0, -1]].every(([dx, dy]) => {
            const qx = px + dx, qy = py + dy;
            if (qx < 0 || qy < 0 || qx >= p.w || qy >= p.h) return false;
            const [a, b, cc] = p.voxel(qx, qy);
            return brain[at(a, b, cc)] > 0;
          });
          if (!inside) rgb = [0, 229, 255];
        }
        if (label && state.overlay && (zoom || name === "difference")) {
          // a panel, and the difference: the finding's outline only
          const c = colours[kindOf[label]] || [255, 40, 40];
          const edge = [[1, 0], [-1, 0], [0, 1], [0, -1]].some(([dx, dy]) => {
            const qx = px + dx, qy = py + dy;
            if (qx < 0 || qy < 0 || qx >= p.w || qy >= p.h) return true;
            const [a, b, cc] = p.voxel(qx, qy);
            return labels[at(a, b, cc)] !== label;
          });
          if (edge) rgb = c;
        }
        image.data[o] = rgb[0];
        image.data[o + 1] = rgb[1];
        image.data[o + 2] = rgb[2];
      }
    }
    canvas.getContext("2d").putImageData(image, 0, 0);
    canvas.style.aspectRatio = `${w * p.sw} / ${h * p.sh}`;
  }
  function mm(i, j, k) {
    const a = data.affine;
    return [0, 1, 2].map((r) => a[4 * r] * i + a[4 * r + 1] * j + a[4 * r + 2] * k + a[4 * r + 3]);
  }
  const views = {};
  for (const plane of Object.keys(planes)) {
    const box = document.getElementById(`view-${plane}`);
    const canvas = box.querySelector("canvas");
    box.querySelector(".left").textContent = planes[plane].left;
    box.querySelector(".right").textContent = planes[plane].right;
    views[plane] = { box, canvas, cross: box.querySelector(".cross") };
    canvas.addEventListener("click", (event) => {
      const rect = canvas.getBoundingClientRect();
      const clamp = (v, n) => Math.max(0, Math.min(n - 1, v));
      const x = clamp(Math.floor((event.clientX - rect.left) / rect.width * canvas.width), canvas.width);
      const y = clamp(Math.floor((event.clientY - rect.top) / rect.height * canvas.height), canvas.height);
      [state.i, state.j, state.k] = planes[plane].voxel(x, y);
      state.plane = plane;
      render();
    });
    canvas.addEventListener("wheel", (event) => {
      event.preventDefault();
      state.plane = plane;
      step(event.deltaY > 0 ? -1 : 1);
    }, { passive: false });
  }
  function step(by) {
    if (state.plane === "axial") state.k = Math.max(0, Math.min(nz - 1, state.k + by));
    if (state.plane === "coronal") state.j = Math.max(0, Math.min(ny - 1, state.j + by));
    if (state.plane === "sagittal") state.i = Math.max(0, Math.min(nx - 1, state.i + by));
    render();
  }
  function render() {
    for (const [plane, view] of Object.entries(views)) {
      draw(view.canvas, plane, state.volume, null);
      const [px, py] = planes[plane].pixel();
      view.cross.style.left = `${(px + 0.5) / view.canvas.width * 100}%`;
      view.cross.style.top = `${(py + 0.5) / view.canvas.height * 100}%`;
      view.box.classList.toggle("active", plane === state.plane);
    }
    const [x, y, z] = mm(state.i, state.j, state.k);
    const label = labels[at(state.i, state.j, state.k)];
    // the voxel of the file as written (as ITK-SNAP or FSLeyes number it)
    const v = data.to_file;
    const [fi, fj, fk] = [0, 1, 2].map((r) =>
      Math.round(v[4 * r] * state.i + v[4 * r + 1] * state.j + v[4 * r + 2] * state.k + v[4 * r + 3]));
    document.getElementById("viewer-cursor").textContent =
      `voxel ${fi}, ${fj}, ${fk} | scanner ${x.toFixed(1)}, ` +
      `${y.toFixed(1)}, ${z.toFixed(1)} mm | ${state.volume} ${value(state.volume, state.i, state.j, state.k).toFixed(0)}` +
      (label ? ` | ${data.name} ${label}` : "");
  }
  const control = (id, apply) => {
    const input = document.getElementById(id);
    if (input) input.addEventListener("input", () => { apply(input); render(); });
  };
  control("viewer-low", (input) => { state.low = +input.value; });
  control("viewer-high", (input) => { state.high = +input.value; });
  control("viewer-opacity", (input) => { state.opacity = +input.value / 100; });
  control("viewer-overlay", (input) => { state.overlay = input.checked; });
  control("viewer-outline", (input) => { state.outline = input.checked; });
  control("viewer-volume", (input) => { state.volume = input.value; });
  // the keys move the viewer only while the pointer is over it or it has the focus: the rest
  // of the page scrolls as pages do
  const viewer = document.getElementById("viewer");
  document.addEventListener("keydown", (event) => {
    if (event.target.tagName === "INPUT" || event.target.tagName === "SELECT") return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (!viewer.matches(":hover") && !viewer.contains(document.activeElement)) return;
    const by = { ArrowUp: 1, ArrowDown: -1, PageUp: 5, PageDown: -5 }[event.key];
    if (by) { event.preventDefault(); step(by); }
    if (event.key === "ArrowLeft" || event.key === "ArrowRight") {
      const order = Object.keys(planes);
      const n = order.indexOf(state.plane) + (event.key === "ArrowRight" ? 1 : -1);
      state.plane = order[(n + order.length) % order.length];
      render();
    }
    if (event.key === "o") {
      state.overlay = !state.overlay;
      const box = document.getElementById("viewer-overlay");
      if (box) box.checked = state.overlay;
      render();
    }
  });
  // a finding's link moves the viewer to it; its panel (where it has one) shows it zoomed
  function goTo(label) {
    const f = data.findings.find((item) => item.label === label);
    if (!f) return;
    [state.i, state.j, state.k] = f.voxel;
    render();
    document.getElementById("viewer").scrollIntoView();
  }
  document.querySelectorAll("[data-goto]").forEach((link) => {
    link.addEventListener("click", (event) => { event.preventDefault(); goTo(+link.dataset.goto); });
  });
  for (const f of data.findings) {
    const panel = document.getElementById(`${data.name}-${f.label}`);
    if (!panel) continue;
    const saved = [state.i, state.j, state.k];
    [state.i, state.j, state.k] = f.voxel;
    panel.querySelectorAll("canvas").forEach((canvas) => {
      const plane = canvas.dataset.plane;
      const [px, py] = planes[plane].pixel();
      const hx = Math.max(3, Math.round(data.zoom_mm / planes[plane].sw));
      const hy = Math.max(3, Math.round(data.zoom_mm / planes[plane].sh));
      draw(canvas, plane, canvas.dataset.volume || state.volume, [px, py, hx, hy]);
    });
    [state.i, state.j, state.k] = saved;
  }
  render();
  viewer.dataset.drawn = "yes";
}

show().catch((error) => {
  // no silent blank: say why the viewer is not there (an old browser, a damaged page)
  const note = document.createElement("p");
  note.className = "warn";
  note.textContent = `The viewer could not be drawn in this browser (${error}); the tables ` +
    "and the registration figure still hold.";
  document.getElementById("viewer").prepend(note);
});
})();
