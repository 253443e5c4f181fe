// The study viewer shared by the review page and the web demo: one canvas, no library.
// It draws the 16-bit slices windowed in the page, the chosen level's map over the model's
// slice and the five points, from lstv.study_view's JSON and raw arrays.
"use strict";

class StudyViewer {
  constructor(canvas, caption) {
    this.canvas = canvas;
    this.caption = caption;
    this.ctx = canvas.getContext("2d");
    this.meta = null;
    this.showHeatmap = true;
    this.showPoints = true;
    this.opacity = 0.6;
    this.level = "l5_s1";
    canvas.addEventListener("wheel", (e) => {
      if (!this.meta) return;
      e.preventDefault();
      this.step(e.deltaY > 0 ? 1 : -1);
    }, { passive: false });
    canvas.addEventListener("mousedown", (e) => this.startDrag(e));
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  // Load a study: meta (JSON), volume (ArrayBuffer of uint16), heatmaps (ArrayBuffer of uint8).
  show(meta, volume, heatmaps) {
    this.meta = meta;
    this.volume = new Uint16Array(volume);
    this.heatmaps = heatmaps && heatmaps.byteLength ? new Uint8Array(heatmaps) : null;
    this.slice = meta.model_slice;
    this.preset(0);
  }

  // Load a study from the server; false when a later load() overtook this one (the reader
  // pressed J twice), so a slow answer never replaces the study now on screen.
  async load(base) {
    const seq = (this.seq = (this.seq || 0) + 1);
    const get = async (url, how) => {
      const r = await fetch(url, { cache: "no-store" });
      if (!r.ok) throw new Error((await r.json()).error || r.statusText);
      return how === "json" ? r.json() : r.arrayBuffer();
    };
    const meta = await get(base, "json");
    const [volume, heatmaps] = await Promise.all([
      get(base + "/volume", "raw"), get(base + "/heatmaps", "raw"),
    ]);
    if (seq !== this.seq) return false;
    this.show(meta, volume, heatmaps);
    return true;
  }

  preset(i) {
    const w = this.meta.windows[Math.min(i, this.meta.windows.length - 1)];
    this.center = w.center;
    this.width = w.width;
    this.windowName = w.name;
    this.draw();
  }

  step(delta) {
    const n = this.meta.shape[0];
    this.slice = Math.min(n - 1, Math.max(0, this.slice + delta));
    this.draw();
  }

  home() { this.slice = this.meta.model_slice; this.draw(); }

  startDrag(e) {
    if (!this.meta) return;
    const x0 = e.clientX, y0 = e.clientY, c0 = this.center, w0 = this.width;
    const range = this.meta.windows[this.meta.windows.length - 1].width;
    const move = (m) => {
      // right = wider window, down = brighter (lower centre), as in OHIF
      this.width = Math.max(1, w0 + (m.clientX - x0) * range / 400);
      this.center = c0 - (m.clientY - y0) * range / 400;
      this.windowName = "custom";
      this.draw();
    };
    const up = () => {
      window.removeEventListener("mousemove", move);
      window.removeEventListener("mouseup", up);
    };
    window.addEventListener("mousemove", move);
    window.addEventListener("mouseup", up);
  }

  // Where image pixel (x, y) lands on the canvas.
  toCanvas(x, y) {
    const g = this.geometry;
    return [g.x + (x + 0.5) * g.scale, g.y + (y + 0.5) * g.scale];
  }

  sliceLabel(i) {
    const s = this.meta.slices[i], n = this.meta.slices.length;
    if (s.instance === null) return "model input";
    const mm = (s.position_mm >= 0 ? "+" : "") + s.position_mm.toFixed(1);
    return `image ${s.instance} (${i + 1}/${n}, ${mm} mm)`;
  }

  draw() {
    const m = this.meta;
    if (!m) return;
    const canvas = this.canvas;
    canvas.width = Math.max(1, canvas.clientWidth);
    canvas.height = Math.max(1, canvas.clientHeight);
    const [, h, w] = m.shape;
    const scale = Math.min(canvas.width / w, canvas.height / h);
    this.geometry = {
      scale, x: (canvas.width - w * scale) / 2, y: (canvas.height - h * scale) / 2,
    };
    const g = this.geometry, ctx = this.ctx;
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    const grey = new OffscreenCanvas(w, h), gctx = grey.getContext("2d");
    const img = gctx.createImageData(w, h), px = img.data;
    const base = this.slice * w * h, low = this.center - this.width / 2;
    const k = 255 / this.width, off = m.offset;
    for (let i = 0; i < w * h; i++) {
      let v = (this.volume[base + i] + off - low) * k;
      v = v < 0 ? 0 : v > 255 ? 255 : v;
      px[4 * i] = px[4 * i + 1] = px[4 * i + 2] = v;
      px[4 * i + 3] = 255;
    }
    gctx.putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(grey, g.x, g.y, w * g.scale, h * g.scale);
    const onModelSlice = this.slice === m.model_slice;
    const levelIndex = m.levels.findIndex((l) => l.key === this.level);
    if (this.showHeatmap && onModelSlice && this.heatmaps && m.heatmap_size) {
      const s = m.heatmap_size, heat = new OffscreenCanvas(s, s), hctx = heat.getContext("2d");
      const hm = hctx.createImageData(s, s), hp = hm.data;
      const rgb = hexColour(m.levels[levelIndex].colour), start = levelIndex * s * s;
      for (let i = 0; i < s * s; i++) {
        hp[4 * i] = rgb[0]; hp[4 * i + 1] = rgb[1]; hp[4 * i + 2] = rgb[2];
        hp[4 * i + 3] = this.heatmaps[start + i] * this.opacity;
      }
      hctx.putImageData(hm, 0, 0);
      ctx.drawImage(heat, g.x, g.y, w * g.scale, h * g.scale);
    }
    if (this.showPoints && onModelSlice) {
      for (const level of m.levels) {
        if (!level.point) continue;
        const [cx, cy] = this.toCanvas(level.point[0], level.point[1]);
        ctx.strokeStyle = level.colour;
        ctx.fillStyle = level.colour;
        ctx.lineWidth = 2;
        ctx.beginPath(); ctx.arc(cx, cy, 7, 0, 2 * Math.PI); ctx.stroke();
        ctx.beginPath(); ctx.arc(cx, cy, 2.5, 0, 2 * Math.PI); ctx.fill();
        ctx.font = "bold 12px system-ui, sans-serif";
        ctx.lineWidth = 3;
        ctx.strokeStyle = "#000";
        ctx.strokeText(level.name, cx + 10, cy + 4);  // a dark outline: readable on any grey
        ctx.fillText(level.name, cx + 10, cy + 4);
      }
    }
    if (this.caption) {
      const where = onModelSlice ? " · the model's slice" : "";
      const heat = this.showHeatmap && onModelSlice && this.heatmaps
        ? ` · map ${m.levels[levelIndex].name} at ${Math.round(this.opacity * 100)} %` : "";
      this.caption.textContent =
        `${this.sliceLabel(this.slice)}${where} · window ${this.windowName} ` +
        `(C ${Math.round(this.center)}, W ${Math.round(this.width)})${heat}`;
    }
  }
}

function hexColour(c) {
  return [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16));
}

// Keys every page with a viewer shares; returns true when the key was the viewer's.
function viewerKey(viewer, e) {
  if (!viewer.meta) return false;
  const k = e.key;
  if (k === "ArrowUp") viewer.step(-1);
  else if (k === "ArrowDown") viewer.step(1);
  else if (k === "Home") viewer.home();
  else if (k === "1" || k === "2" || k === "3") viewer.preset(Number(k) - 1);
  else if (k === "h" || k === "H") { viewer.showHeatmap = !viewer.showHeatmap; viewer.draw(); }
  else if (k === "p" || k === "P") { viewer.showPoints = !viewer.showPoints; viewer.draw(); }
  else return false;
  return true;
}

// No key acts while the reader types in a field.
function typing(e) {
  const t = e.target;
  return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" ||
    t.isContentEditable);
}

// The controls beside a viewer: level of the map and its opacity.
function bindControls(viewer, levelSelect, opacity) {
  levelSelect.addEventListener("change", () => { viewer.level = levelSelect.value; viewer.draw(); });
  opacity.addEventListener("input", () => { viewer.opacity = opacity.value / 100; viewer.draw(); });
}
