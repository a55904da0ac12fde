/* rflens explorer: point at a unit, see what it sees; click a pixel, see who sees it.
 *
 * Reads the JSON written by rflens/report/explorer_data.py (one <script type="application/json"
 * class="rfx-data"> per explorer) and draws with SVG. Nothing is fetched. The geometry below
 * mirrors rflens.trf.result.LayerField.box / units_seeing exactly (integers only).
 * Conventions: input pixel (r, c) covers [c, c+1] x [r, r+1] in the picture's coordinates; a box
 * (lo, hi) is inclusive and drawn from lo to hi + 1.
 */
(function () {
  "use strict";

  // ---------------------------------------------------------------- geometry ----------------
  function interval(ax, u) {
    var b = Math.floor(u / ax.period), p = u - b * ax.period;
    return [ax.lo[p] + b * ax.shift, ax.hi[p] + b * ax.shift];
  }

  function Geo(layer, spatial) {
    this.layer = layer;
    this.n = layer.grid;
    this.axes = layer.axes;
    if (!layer.axes) { return; }
    this.hlo = [];
    this.hhi = [];
    for (var a = 0; a < layer.axes.length; a++) {
      var ax = layer.axes[a];
      if (ax.hull) {
        this.hlo.push(ax.hull.lo);
        this.hhi.push(ax.hull.hi);
      } else {  // one component: the geometric field clipped to the input
        var lo = [], hi = [], last = spatial[a] - 1;
        for (var u = 0; u < this.n[a]; u++) {
          var iv = interval(ax, u);
          lo.push(Math.max(iv[0], 0));
          hi.push(Math.min(iv[1], last));
        }
        this.hlo.push([lo]);
        this.hhi.push([hi]);
      }
    }
    this.K = this.hlo[0].length;
  }

  /* rf.box(layer, unit): per axis [lo, hi], or null when the unit reads nothing. */
  Geo.prototype.box = function (unit) {
    var out = [];
    for (var a = 0; a < this.axes.length; a++) {
      var iv = interval(this.axes[a], unit[a]);
      if (iv[0] > iv[1]) { return null; }
      out.push(iv);
    }
    return out;
  };

  /* rf.box(layer, unit, clip=True): hull over the components present on every axis. */
  Geo.prototype.clipBox = function (unit) {
    var A = this.axes.length, out = [], any = false, a, k;
    for (a = 0; a < A; a++) { out.push([Infinity, -Infinity]); }
    for (k = 0; k < this.K; k++) {
      var present = true;
      for (a = 0; a < A && present; a++) {
        present = this.hlo[a][k][unit[a]] <= this.hhi[a][k][unit[a]];
      }
      if (!present) { continue; }
      any = true;
      for (a = 0; a < A; a++) {
        out[a][0] = Math.min(out[a][0], this.hlo[a][k][unit[a]]);
        out[a][1] = Math.max(out[a][1], this.hhi[a][k][unit[a]]);
      }
    }
    return any ? out : null;
  };

  /* rf.units_seeing(layer, pixel) (range per axis, or null) and the exact set behind it: the
   * union over components that see the pixel on every axis of the product of their hits. */
  Geo.prototype.seeing = function (pixel) {
    var A = this.axes.length, hits = [], seeing = [], a, k, u;
    for (a = 0; a < A; a++) {
      hits.push([]);
      for (k = 0; k < this.K; k++) {
        var h = new Uint8Array(this.n[a]), lo = this.hlo[a][k], hi = this.hhi[a][k];
        for (u = 0; u < this.n[a]; u++) { h[u] = (lo[u] <= pixel[a] && pixel[a] <= hi[u]) ? 1 : 0; }
        hits[a].push(h);
      }
    }
    for (k = 0; k < this.K; k++) {
      var all = true;
      for (a = 0; a < A && all; a++) { all = hits[a][k].indexOf(1) >= 0; }
      if (all) { seeing.push(k); }
    }
    if (!seeing.length) { return {range: null, hits: hits, comps: seeing}; }
    var range = [];
    for (a = 0; a < A; a++) {
      var first = -1, last = -1;
      for (u = 0; u < this.n[a]; u++) {
        for (var i = 0; i < seeing.length; i++) {
          if (hits[a][seeing[i]][u]) { if (first < 0) { first = u; } last = u; break; }
        }
      }
      range.push([first, last]);
    }
    return {range: range, hits: hits, comps: seeing};
  };

  /* Union of every unit's unclipped box per axis (for the "whole field" view). */
  Geo.prototype.extent = function () {
    var out = [];
    for (var a = 0; a < this.axes.length; a++) {
      var lo = Infinity, hi = -Infinity;
      for (var u = 0; u < this.n[a]; u++) {
        var iv = interval(this.axes[a], u);
        if (iv[0] <= iv[1]) { lo = Math.min(lo, iv[0]); hi = Math.max(hi, iv[1]); }
      }
      out.push([lo, hi]);
    }
    return out;
  };

  /* Per axis the unit whose (unclipped) centre is nearest to c; -1 when the axis has none. */
  Geo.prototype.nearest = function (a, c) {
    var best = -1, dist = Infinity;
    for (var u = 0; u < this.n[a]; u++) {
      var iv = interval(this.axes[a], u);
      if (iv[0] > iv[1]) { continue; }
      var d = Math.abs((iv[0] + iv[1]) / 2 - c);
      if (d < dist) { dist = d; best = u; }
    }
    return best;
  };

  // ---------------------------------------------------------------- helpers -----------------
  function el(ns, tag, attrs, parent) {
    var node = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
    for (var key in attrs) { if (attrs.hasOwnProperty(key)) { node.setAttribute(key, attrs[key]); } }
    if (parent) { parent.appendChild(node); }
    return node;
  }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }
  function fmt(v) { return (v < 0 ? "\u2212" : "") + String(Math.abs(v)); }
  function tuple(values) { return "(" + values.map(fmt).join(", ") + ")"; }
  function same(a, b) { return a && b && a.length === b.length && a.every(function (v, i) { return v === b[i]; }); }
  function clamp(v, lo, hi) { return Math.max(lo, Math.min(hi, v)); }
  /* a dot of radius rad at (x, y); on a 1-D strip (stretched vertically) a short tick instead */
  function mark(x, y, rad, strip) {
    if (strip) { return "M" + (x - rad / 2) + " 0.2h" + rad + "v0.6h" + (-rad) + "z"; }
    return "M" + (x - rad) + " " + y + "a" + rad + " " + rad + " 0 1 0 " + 2 * rad + " 0a" + rad + " " + rad + " 0 1 0 " + (-2 * rad) + " 0";
  }
  var AXIS_NAMES = {1: ["x"], 2: ["rows", "cols"], 3: ["depth", "rows", "cols"]};

  // ---------------------------------------------------------------- one explorer ------------
  function Explorer(root) {
    this.root = root;
    // (front ends that re-create script nodes may drop the class: the type is enough)
    this.data = JSON.parse(root.querySelector("script[type='application/json']").textContent);
    var d = this.data;
    this.spatial = d.spatial;
    this.ndim = d.spatial.length;
    this.rowAxis = this.ndim === 1 ? -1 : this.ndim - 2;
    this.colAxis = this.ndim - 1;
    this.img = root.querySelector(".rfx-img");
    this.units = root.querySelector(".rfx-units");
    this.NS = this.img.namespaceURI;
    this.info = root.querySelector(".rfx-info");
    this.select = root.querySelector(".rfx-layer");
    this.geos = {};
    this.state = {li: -1, unit: null, hover: null, pixel: null, hoverPixel: null,
                  slice: this.ndim === 3 ? Math.floor(d.spatial[0] / 2) : 0, pad: false, grid: true};
    this.build();
    this.selectLayer(d.initial);
  }

  Explorer.prototype.geo = function (li) {
    if (!this.geos[li]) { this.geos[li] = new Geo(this.data.layers[li], this.spatial); }
    return this.geos[li];
  };

  Explorer.prototype.build = function () {
    var self = this, d = this.data;
    d.layers.forEach(function (L, i) {
      var opt = el(null, "option", {value: String(i)}, self.select);
      var tag = L.axes ? " \u2014 " + L.grid.join("\u00d7") : " \u2014 unknown";
      if (L.global) { tag += ", global"; }
      opt.textContent = L.name + tag;
    });
    this.select.addEventListener("change", function () { self.selectLayer(+self.select.value); });
    this.root.querySelector(".rfx-prev").addEventListener("click", function () { self.step(-1); });
    this.root.querySelector(".rfx-next").addEventListener("click", function () { self.step(1); });
    this.root.querySelector(".rfx-pad").addEventListener("change", function (ev) {
      self.state.pad = ev.target.checked; self.render();
    });
    this.root.querySelector(".rfx-showgrid").addEventListener("change", function (ev) {
      self.state.grid = ev.target.checked; self.render();
    });
    if (this.ndim === 3) { this.buildSliders(); }
    var pic = this.img.querySelector(".rfx-pic");
    pic.setAttribute("width", String(this.spatial[this.colAxis]));
    pic.setAttribute("height", this.rowAxis < 0 ? "1" : String(this.spatial[this.rowAxis]));
    this.overIn = el(this.NS, "g", {"class": "rfx-overlay"}, this.img);
    this.overUnits = el(this.NS, "g", {"class": "rfx-overlay"}, this.units);
    // the picture: hover shows the pixel, click asks which units see it
    this.img.addEventListener("pointermove", function (ev) {
      self.state.hoverPixel = self.pixelAt(ev); self.caption();
    });
    this.img.addEventListener("pointerleave", function () { self.state.hoverPixel = null; self.caption(); });
    this.img.addEventListener("click", function (ev) {
      var p = self.pixelAt(ev);
      if (p) { self.state.pixel = p; self.render(); }
    });
    // the unit grid: hover previews a unit, click pins it
    this.units.addEventListener("pointermove", function (ev) {
      var u = self.unitAt(ev);
      if (!same(u, self.state.hover)) { self.state.hover = u; self.render(); }
    });
    this.units.addEventListener("pointerleave", function () {
      if (self.state.hover) { self.state.hover = null; self.render(); }
    });
    this.units.addEventListener("click", function (ev) {
      var u = self.unitAt(ev);
      if (u) { self.state.unit = u; self.state.hover = null; self.followUnit(); self.render(); }
      self.units.focus();
    });
    // keys anywhere in the explorer, except where a control uses them itself
    this.root.addEventListener("keydown", function (ev) {
      var tag = ev.target.tagName;
      if (tag === "SELECT" || (tag === "INPUT" && ev.target.type === "range")) { return; }
      self.key(ev);
    });
    window.addEventListener("resize", function () { self.render(); });
  };

  Explorer.prototype.buildSliders = function () {
    var self = this, box = this.root.querySelector(".rfx-slices");
    function slider(label, cls, max, onInput) {
      var wrap = el(null, "label", {}, box);
      wrap.appendChild(document.createTextNode(label + " "));
      var input = el(null, "input", {type: "range", min: "0", max: String(max), step: "1", "class": cls}, wrap);
      var out = el(null, "output", {}, wrap);
      input.addEventListener("input", function () { onInput(+input.value); });
      return {input: input, out: out};
    }
    this.inSlice = slider("input depth", "rfx-slice", this.spatial[0] - 1, function (v) {
      self.state.slice = v; self.render();
    });
    this.unitSlice = slider("unit depth", "rfx-uslice", 0, function (v) {
      if (self.state.unit) { self.state.unit[0] = v; self.followUnit(); self.render(); }
    });
  };

  /* the input pixel under the pointer (null outside the input) */
  Explorer.prototype.pixelAt = function (ev) {
    var p = this.toLocal(this.img, ev), pixel = [], c = Math.floor(p.x), r = Math.floor(p.y);
    if (c < 0 || c >= this.spatial[this.colAxis]) { return null; }
    if (this.ndim === 1) { return [c]; }
    if (r < 0 || r >= this.spatial[this.rowAxis]) { return null; }
    if (this.ndim === 3) { pixel.push(this.state.slice); }
    pixel.push(r, c);
    return pixel;
  };

  Explorer.prototype.unitAt = function (ev) {
    var L = this.layer();
    if (!L.axes || !this.state.unit) { return null; }
    var p = this.toLocal(this.units, ev), n = L.grid, c = Math.floor(p.x), r = Math.floor(p.y);
    if (c < 0 || c >= n[this.colAxis]) { return null; }
    if (this.ndim === 1) { return [c]; }
    if (r < 0 || r >= n[this.rowAxis]) { return null; }
    var unit = this.state.unit.slice();
    unit[this.rowAxis] = r;
    unit[this.colAxis] = c;
    return unit;
  };

  Explorer.prototype.toLocal = function (svg, ev) {
    var pt = svg.createSVGPoint();
    pt.x = ev.clientX;
    pt.y = ev.clientY;
    return pt.matrixTransform(svg.getScreenCTM().inverse());
  };

  Explorer.prototype.layer = function () { return this.data.layers[this.state.li]; };

  Explorer.prototype.step = function (delta) {
    this.selectLayer(clamp(this.state.li + delta, 0, this.data.layers.length - 1));
  };

  /* Select layer li; the unit becomes the one whose field centre is nearest to the previous
   * unit's (the centre unit n // 2 when there is none). */
  Explorer.prototype.selectLayer = function (li) {
    var old = this.state.unit && this.state.li >= 0 && this.layer().axes ? this.geo(this.state.li).box(this.state.unit) : null;
    this.state.li = li;
    this.select.value = String(li);
    var L = this.layer(), unit = null;
    if (L.axes) {
      var g = this.geo(li);
      unit = L.grid.map(function (n, a) {
        var u = old ? g.nearest(a, (old[a][0] + old[a][1]) / 2) : -1;
        return u >= 0 ? u : Math.floor(n / 2);
      });
    }
    this.state.unit = unit;
    this.state.hover = null;
    if (this.unitSlice) {
      this.unitSlice.input.max = String(L.axes ? L.grid[0] - 1 : 0);
      this.unitSlice.input.disabled = !L.axes;
    }
    this.followUnit();
    this.render();
  };

  /* in 3-D, show the input slice through the unit's field centre */
  Explorer.prototype.followUnit = function () {
    if (this.ndim !== 3 || !this.state.unit) { return; }
    var box = this.geo(this.state.li).box(this.state.unit);
    if (box) { this.state.slice = clamp(Math.floor((box[0][0] + box[0][1]) / 2), 0, this.spatial[0] - 1); }
  };

  Explorer.prototype.key = function (ev) {
    var L = this.layer(), s = this.state, big = ev.shiftKey ? 8 : 1, move = null;
    if (ev.key === "PageUp" || ev.key === "PageDown") {
      this.step(ev.key === "PageUp" ? -1 : 1);
      ev.preventDefault();
      return;
    }
    if (ev.key === "Escape") { s.pixel = null; this.render(); return; }
    if (!L.axes || !s.unit) { return; }
    var r = this.rowAxis, c = this.colAxis;
    if (ev.key === "ArrowLeft") { move = [c, -big]; }
    else if (ev.key === "ArrowRight") { move = [c, big]; }
    else if (ev.key === "ArrowUp" && r >= 0) { move = [r, -big]; }
    else if (ev.key === "ArrowDown" && r >= 0) { move = [r, big]; }
    else if ((ev.key === "-" || ev.key === "+" || ev.key === "=") && this.ndim === 3) {
      move = [0, ev.key === "-" ? -1 : 1];
    }
    if (!move) { return; }
    ev.preventDefault();
    s.unit = s.unit.slice();
    s.unit[move[0]] = clamp(s.unit[move[0]] + move[1], 0, L.grid[move[0]] - 1);
    s.hover = null;
    this.followUnit();
    this.render();
  };

  // ---------------------------------------------------------------- drawing -----------------
  Explorer.prototype.render = function () {
    var L = this.layer(), s = this.state;
    var unit = s.hover || s.unit;
    var geo = L.axes ? this.geo(s.li) : null;
    var view = {L: L, geo: geo, unit: unit, box: null, clip: null, seen: null};
    if (geo && unit) {
      view.box = geo.box(unit);
      view.clip = geo.clipBox(unit);
    }
    if (geo && s.pixel) { view.seen = geo.seeing(s.pixel); }
    if (this.inSlice) {
      this.inSlice.input.value = String(s.slice);
      this.inSlice.out.textContent = s.slice + " / " + (this.spatial[0] - 1);
      this.unitSlice.input.value = String(s.unit ? s.unit[0] : 0);
      this.unitSlice.out.textContent = s.unit ? s.unit[0] + " / " + (L.grid[0] - 1) : "\u2013";
    }
    this.drawInput(view);
    this.drawUnits(view);
    this.describe(view);
    this.caption();
  };

  /* display rectangle [x, y, w, h] of an inclusive per-axis box */
  Explorer.prototype.rect = function (box) {
    var c = box[this.colAxis];
    if (this.rowAxis < 0) { return [c[0], 0, c[1] - c[0] + 1, 1]; }
    var r = box[this.rowAxis];
    return [c[0], r[0], c[1] - c[0] + 1, r[1] - r[0] + 1];
  };

  Explorer.prototype.viewBox = function (geo) {
    var W = this.spatial[this.colAxis], H = this.rowAxis < 0 ? 1 : this.spatial[this.rowAxis];
    var x0 = 0, x1 = W, y0 = 0, y1 = H;
    if (this.state.pad && geo) {
      var ext = geo.extent(), ce = ext[this.colAxis];
      if (isFinite(ce[0])) { x0 = Math.min(x0, ce[0]); x1 = Math.max(x1, ce[1] + 1); }
      if (this.rowAxis >= 0) {
        var re = ext[this.rowAxis];
        if (isFinite(re[0])) { y0 = Math.min(y0, re[0]); y1 = Math.max(y1, re[1] + 1); }
      }
    }
    var m = Math.max(1, Math.round(0.05 * Math.max(x1 - x0, y1 - y0)));
    if (this.rowAxis < 0) { return [x0 - m, -0.35, x1 - x0 + 2 * m, 1.7]; }
    return [x0 - m, y0 - m, x1 - x0 + 2 * m, y1 - y0 + 2 * m];
  };

  Explorer.prototype.size = function (svg, vb, maxW, maxH) {
    var avail = Math.max(160, Math.min(maxW, (svg.parentNode.clientWidth || maxW)));
    var w, h;
    if (this.rowAxis < 0) { w = avail; h = 64; svg.setAttribute("preserveAspectRatio", "none"); }
    else {
      w = avail; h = w * vb[3] / vb[2];
      if (h > maxH) { h = maxH; w = h * vb[2] / vb[3]; }
    }
    svg.setAttribute("viewBox", vb.join(" "));
    svg.style.width = Math.round(w) + "px";
    svg.style.height = Math.round(h) + "px";
    return w / vb[2];  // screen pixels per unit along x
  };

  Explorer.prototype.drawInput = function (v) {
    var NS = this.NS, g = this.overIn, s = this.state, self = this;
    clear(g);
    var scale = this.size(this.img, this.viewBox(v.geo), 470, 470);
    this.img.querySelector(".rfx-pic").style.imageRendering = scale >= 2 ? "pixelated" : "auto";
    var W = this.spatial[this.colAxis], H = this.rowAxis < 0 ? 1 : this.spatial[this.rowAxis];
    el(NS, "rect", {x: 0, y: 0, width: W, height: H, "class": "rfx-border"}, g);
    if (v.geo && s.grid && !v.L.global) { this.drawGrid(g, v, scale); }
    if (v.geo && v.unit && !v.L.global) { this.drawErf(g, v); }
    var onSlice = true;
    if (v.box && this.ndim === 3) { onSlice = v.box[0][0] <= s.slice && s.slice <= v.box[0][1]; }
    var off = onSlice ? "" : " rfx-off";
    if (v.box && !v.L.global) {
      var b = this.rect(v.box);
      el(NS, "rect", {x: b[0], y: b[1], width: b[2], height: b[3], "class": "rfx-shadow"}, g);
      el(NS, "rect", {x: b[0], y: b[1], width: b[2], height: b[3], "class": "rfx-box-full" + off}, g);
      var cx = b[0] + b[2] / 2, cy = b[1] + b[3] / 2, arm = 6 / scale;
      el(NS, "path", {d: this.rowAxis < 0 ? "M" + cx + " -0.2V1.2" :
                        "M" + (cx - arm) + " " + cy + "H" + (cx + arm) + "M" + cx + " " + (cy - arm) + "V" + (cy + arm),
                      "class": "rfx-centre" + off}, g);
    }
    if (v.clip && !v.L.global) {
      var k = this.rect(v.clip);
      el(NS, "rect", {x: k[0], y: k[1], width: k[2], height: k[3], "class": "rfx-shadow"}, g);
      el(NS, "rect", {x: k[0], y: k[1], width: k[2], height: k[3], "class": "rfx-box-clip" + off}, g);
    }
    if (s.pixel) {
      var pr = s.pixel.map(function (p) { return [p, p]; });
      var q = this.rect(pr), pad = Math.max(0, 3 / scale - 0.5);
      if (this.ndim !== 3 || s.pixel[0] === s.slice) {
        el(NS, "rect", {x: q[0] - pad, y: q[1] - pad, width: q[2] + 2 * pad, height: q[3] + 2 * pad,
                        "class": "rfx-pixel"}, g);
      }
      if (v.seen && v.seen.range && !v.L.global) { this.drawSeenOnInput(g, v, scale); }
    }
    self.img.setAttribute("data-layer", v.L.name);
  };

  /* unit grid over the picture: cell borders for uniform layers, field centres otherwise */
  Explorer.prototype.drawGrid = function (g, v, scale) {
    var L = v.L, geo = v.geo, NS = this.NS, c = this.colAxis, r = this.rowAxis;
    var axes = r < 0 ? [c] : [r, c], path = "", a, u, i;
    var unit = v.unit || L.grid.map(function (n) { return Math.floor(n / 2); });
    if (L.uniform) {
      var edges = {};
      for (i = 0; i < axes.length; i++) {  // cell borders: centres -+ J/2
        a = axes[i];
        var ax = L.axes[a], J = ax.shift, list = [];
        for (u = 0; u < L.grid[a]; u++) {
          var iv = interval(ax, u);
          list.push((iv[0] + iv[1] + 1) / 2 - J / 2);
        }
        list.push(list[list.length - 1] + J);
        edges[a] = {list: list, dense: J * scale < 6};
      }
      var span = function (a) { return r < 0 && a === r ? [0, 1] : [edges[a].list[0], edges[a].list[edges[a].list.length - 1]]; };
      var rs = r < 0 ? [0, 1] : span(r), cs = span(c);
      if (!edges[c].dense) { edges[c].list.forEach(function (x) { path += "M" + x + " " + rs[0] + "V" + rs[1]; }); }
      if (r >= 0 && !edges[r].dense) { edges[r].list.forEach(function (y) { path += "M" + cs[0] + " " + y + "H" + cs[1]; }); }
      if (path) { el(NS, "path", {d: path, "class": "rfx-grid"}, g); }
      return;
    }
    var rows = r < 0 ? [null] : [], cols = [];
    for (u = 0; u < L.grid[c]; u++) { cols.push(u); }
    if (r >= 0) { for (u = 0; u < L.grid[r]; u++) { rows.push(u); } }
    if (rows.length * cols.length > 6000) { return; }
    var probe = unit.slice(), dots = "", rad = 1.5 / scale;
    rows.forEach(function (ru) {
      cols.forEach(function (cu) {
        if (ru !== null) { probe[r] = ru; }
        probe[c] = cu;
        var box = geo.box(probe);
        if (!box) { return; }
        var x = (box[c][0] + box[c][1] + 1) / 2, y = r < 0 ? 0.5 : (box[r][0] + box[r][1] + 1) / 2;
        dots += mark(x, y, rad, r < 0);
      });
    });
    if (dots) { el(NS, "path", {d: dots, "class": "rfx-dots"}, g); }
  };

  Explorer.prototype.erfStatus = function (v) {
    var L = v.L, e = this.data.erf[L.name], geo = v.geo, self = this;
    if (!e) { return {show: false, text: "not measured for this layer" + (Object.keys(this.data.erf).length ? "" : " (none in this view)")}; }
    var where = " (measured at unit " + tuple(e.unit) + ", " + e.samples + " samples of " + (e.inputs || e.method) + ")";
    if (same(v.unit, e.unit)) {
      return {show: true, shift: v.unit.map(function () { return 0; }),
              text: "measured at this unit, " + e.samples + " samples of " + (e.inputs || e.method)};
    }
    function inside(unit) {
      var box = geo.box(unit);
      return !!box && box.every(function (iv, a) { return iv[0] >= 0 && iv[1] <= self.spatial[a] - 1; });
    }
    if (L.global) { return {show: false, text: "not available: global layer" + where}; }
    if (!L.uniform) {
      return {show: false, text: "not available for this unit: the layer is non-uniform, so other units' ERFs are not shifted copies" + where};
    }
    if (!inside(v.unit) || !inside(e.unit)) {
      return {show: false, text: "not available for this unit: translation holds only between units whose fields lie inside the input" + where};
    }
    var shift = v.unit.map(function (u, a) { return (u - e.unit[a]) * L.axes[a].shift; });
    return {show: true, shift: shift, text: "translated by " + tuple(shift) + " px from unit " + tuple(e.unit) +
            " (uniform layer, both fields inside the input; " + e.samples + " samples of " + (e.inputs || e.method) + ")"};
  };

  Explorer.prototype.drawErf = function (g, v) {
    var st = this.erfStatus(v), e = this.data.erf[v.L.name], NS = this.NS;
    v.erf = st;
    if (!st.show) { return; }
    var dx = st.shift[this.colAxis], dy = this.rowAxis < 0 ? 0 : st.shift[this.rowAxis];
    var key = this.ndim === 3 ? String(this.state.slice - st.shift[0]) : "0";
    var group = el(NS, "g", {"class": "rfx-erf", transform: "translate(" + dx + " " + dy + ")",
                             "data-dx": dx, "data-dy": dy}, g);
    e.levels.forEach(function (level, i) {
      var d = level.slices[key];
      if (d) { el(NS, "path", {d: d, "class": "rfx-contour rfx-contour-" + i, "data-p": level.p}, group); }
    });
  };

  Explorer.prototype.seenMask = function (v, depth) {
    /* 2-D mask rows x cols of units seeing the pixel, at unit depth `depth` in 3-D */
    var L = v.L, r = this.rowAxis, c = this.colAxis, nR = r < 0 ? 1 : L.grid[r], nC = L.grid[c];
    var mask = new Uint8Array(nR * nC), seen = v.seen;
    seen.comps.forEach(function (k) {
      if (depth !== null && !seen.hits[0][k][depth]) { return; }
      var hc = seen.hits[c][k], hr = r < 0 ? null : seen.hits[r][k];
      for (var i = 0; i < nR; i++) {
        if (hr && !hr[i]) { continue; }
        for (var j = 0; j < nC; j++) { if (hc[j]) { mask[i * nC + j] = 1; } }
      }
    });
    return {mask: mask, nR: nR, nC: nC};
  };

  Explorer.prototype.unitDepth = function (v) {
    return this.ndim === 3 ? (v.unit ? v.unit[0] : 0) : null;
  };

  Explorer.prototype.drawSeenOnInput = function (g, v, scale) {
    var m = this.seenMask(v, this.unitDepth(v)), probe = v.unit.slice(), d = "", count = 0;
    var r = this.rowAxis, c = this.colAxis, rad = 2 / scale;
    for (var i = 0; i < m.nR && count < 5000; i++) {
      for (var j = 0; j < m.nC; j++) {
        if (!m.mask[i * m.nC + j]) { continue; }
        if (r >= 0) { probe[r] = i; }
        probe[c] = j;
        var box = v.geo.box(probe);
        if (!box) { continue; }
        var x = (box[c][0] + box[c][1] + 1) / 2, y = r < 0 ? 0.5 : (box[r][0] + box[r][1] + 1) / 2;
        d += mark(x, y, rad, r < 0);
        count++;
      }
    }
    if (d) { el(this.NS, "path", {d: d, "class": "rfx-seen-dots"}, g); }
  };

  Explorer.prototype.drawUnits = function (v) {
    var NS = this.NS, g = this.overUnits, L = v.L, r = this.rowAxis, c = this.colAxis;
    clear(g);
    if (!L.axes) {
      this.size(this.units, [0, 0, 1, 1], 300, 300);
      el(NS, "rect", {x: 0, y: 0, width: 1, height: 1, "class": "rfx-unknown"}, g);
      return;
    }
    var nR = r < 0 ? 1 : L.grid[r], nC = L.grid[c];
    var scale = this.size(this.units, [0, 0, nC, nR], 300, 300);
    el(NS, "rect", {x: 0, y: 0, width: nC, height: nR, "class": "rfx-cells" + (L.global ? " rfx-global" : "")}, g);
    if (scale >= 6) {
      var path = "", i;
      for (i = 1; i < nC; i++) { path += "M" + i + " 0V" + nR; }
      for (i = 1; i < nR; i++) { path += "M0 " + i + "H" + nC; }
      if (path) { el(NS, "path", {d: path, "class": "rfx-cell-lines"}, g); }
    }
    var e = this.data.erf[L.name], depth = this.unitDepth(v);
    if (e && (depth === null || e.unit[0] === depth)) {
      el(NS, "circle", {cx: e.unit[c] + 0.5, cy: r < 0 ? 0.5 : e.unit[r] + 0.5, r: Math.max(0.18, 3 / scale),
                        "class": "rfx-erf-unit"}, g);
    }
    if (v.seen && L.global) {  // every unit depends on every pixel
      el(NS, "rect", {x: 0, y: 0, width: nC, height: nR, "class": "rfx-seeing rfx-all"}, g);
    } else if (v.seen && v.seen.range) {
      var m = this.seenMask(v, depth), seenG = el(NS, "g", {"class": "rfx-seen"}, g);
      for (var row = 0; row < nR; row++) {
        var start = -1;
        for (var col = 0; col <= nC; col++) {
          var on = col < nC && m.mask[row * nC + col];
          if (on && start < 0) { start = col; }
          if (!on && start >= 0) {
            el(NS, "rect", {x: start, y: row, width: col - start, height: 1, "class": "rfx-seeing",
                            "data-row": row}, seenG);
            start = -1;
          }
        }
      }
    }
    var shown = [[this.state.unit, "rfx-unit"]];
    if (this.state.hover) { shown.push([this.state.hover, "rfx-hover"]); }
    shown.forEach(function (pair) {
      var u = pair[0];
      if (!u || (depth !== null && u[0] !== depth)) { return; }
      el(NS, "rect", {x: u[c], y: r < 0 ? 0 : u[r], width: 1, height: 1, "class": pair[1],
                      "data-unit": u.join(",")}, g);
    });
    this.units.setAttribute("aria-label", "units of " + L.name + ": " + L.grid.join("\u00d7") +
                            "; selected " + (this.state.unit ? tuple(this.state.unit) : "none"));
  };

  // ---------------------------------------------------------------- text --------------------
  Explorer.prototype.describe = function (v) {
    var L = v.L, rows = [], notes = [], self = this, names = AXIS_NAMES[this.ndim] || [];
    function boxText(box) {
      return box.map(function (iv, a) { return (names[a] || "axis " + a) + " " + fmt(iv[0]) + "\u2026" + fmt(iv[1]); }).join(", ");
    }
    rows.push(["layer", L.name + " (" + L.op + ")"]);
    rows.push(["output", L.shape.join("\u00d7") + (L.axes ? "; units " + L.grid.join("\u00d7") : "")]);
    if (!L.axes) {
      notes.push(["unknown", "Field unknown: " + L.why + ". Nothing to draw."]);
    } else {
      rows.push(["unit", v.unit ? tuple(v.unit) + (this.state.hover ? " (hover)" : "") : "\u2013"]);
      rows.push(["jump", L.axes.map(function (ax) { return ax.jump; }).join(" \u00d7 ") + " px per unit"]);
      if (L.global) {
        notes.push(["global", "Global layer: every unit depends on every input pixel (an op such as " +
                    "adaptive pooling or attention pools over the whole input upstream), so there is no local box to draw."]);
      } else if (v.unit) {
        if (v.box) {
          var pad = v.box.some(function (iv, a) { return iv[0] < 0 || iv[1] > self.spatial[a] - 1; });
          var hint = this.state.pad ? ")" : "; tick \u201cwhole field\u201d to see all of it)";
          rows.push(["box", boxText(v.box) + (pad ? " (reaches into padding" + hint : "")]);
          rows.push(["centre", tuple(v.box.map(function (iv) { return (iv[0] + iv[1]) / 2; }))]);
          rows.push(["size", v.box.map(function (iv) { return iv[1] - iv[0] + 1; }).join(" \u00d7 ") + " px"]);
        } else {
          rows.push(["box", "none: this unit reads no input unit (a gap of a transposed convolution)"]);
        }
        if (v.clip) {
          rows.push(["clip", boxText(v.clip) + "; " + v.clip.map(function (iv) { return iv[1] - iv[0] + 1; }).join(" \u00d7 ") + " px"]);
        } else {
          rows.push(["clip", "none: this unit depends on no input pixel"]);
        }
        if (this.ndim === 3 && v.box && (this.state.slice < v.box[0][0] || this.state.slice > v.box[0][1])) {
          notes.push(["slice", "The field spans depth " + fmt(v.box[0][0]) + "\u2026" + fmt(v.box[0][1]) +
                      "; input slice " + this.state.slice + " lies outside it (boxes drawn grey)."]);
        }
        var erf = v.erf || this.erfStatus(v);
        rows.push(["erf", erf.text]);
      }
      if (!L.uniform) {
        var spans = L.axes.map(function (ax, a) {
          return (names[a] || a) + " " + (ax.sizes[0] === ax.sizes[1] ? ax.sizes[0] : ax.sizes[0] + "\u2013" + ax.sizes[1]) +
                 " px, period " + ax.period + (ax.exact !== null ? " (explicit table)" : "");
        });
        notes.push(["nonuniform", "Non-uniform layer: boxes differ from unit to unit (sizes " + spans.join("; ") +
                    "); each box shown is that unit's own."]);
      }
      if (!L.aligned) {
        notes.push(["nonaligned", "Non-aligned merge upstream: paths with different centres meet; the box is their union."]);
      }
      if (!L.exact_hull) {
        notes.push(["hull", "The clipped box may be a superset here (too many path components were merged)."]);
      }
      if (L.flags.indexOf("exceeds-input") >= 0) {
        notes.push(["exceeds", "The field is larger than the input along some axis."]);
      }
    }
    var s = this.state;
    if (s.pixel) {
      var text = "pixel " + tuple(s.pixel) + ": ";
      if (!v.geo) { text += "no inverse map (field unknown)"; }
      else if (L.global) { text += "every unit of this global layer depends on it (all highlighted)"; }
      else if (!v.seen.range) { text += "no unit of this layer sees it"; }
      else {
        var m = this.seenMask(v, this.unitDepth(v)), count = 0;
        for (var i = 0; i < m.mask.length; i++) { count += m.mask[i]; }
        text += "units " + v.seen.range.map(function (iv, a) { return (names[a] || a) + " " + iv[0] + "\u2026" + iv[1]; }).join(", ") +
                " (" + count + " highlighted" + (this.ndim === 3 ? " at unit depth " + this.unitDepth(v) : "") + ")";
      }
      rows.push(["pixel", text + " \u2014 Esc clears"]);
    }
    clear(this.info);
    var table = el(null, "table", {"class": "rfx-facts"}, this.info);
    var labels = {layer: "layer", output: "output", unit: "unit", jump: "jump", box: "field (unclipped)",
                  centre: "centre", size: "size", clip: "clipped to input", erf: "ERF", pixel: "inverse map"};
    rows.forEach(function (row) {
      var tr = el(null, "tr", {"data-key": row[0]}, table);
      el(null, "th", {}, tr).textContent = labels[row[0]];
      el(null, "td", {}, tr).textContent = row[1];
    });
    if (notes.length) {
      var ul = el(null, "ul", {"class": "rfx-notes"}, this.info);
      notes.forEach(function (n) { el(null, "li", {"data-note": n[0]}, ul).textContent = n[1]; });
    }
  };

  Explorer.prototype.caption = function () {
    var cap = this.root.querySelector(".rfx-hoverpx"), p = this.state.hoverPixel;
    cap.textContent = p ? "pixel " + tuple(p) : "";
  };

  // ---------------------------------------------------------------- start -------------------
  var registry = window.rflensExplorers = window.rflensExplorers || {};
  function start() {
    var roots = document.querySelectorAll(".rfx[data-rfx-state='pending']");
    Array.prototype.forEach.call(roots, function (root) {
      root.setAttribute("data-rfx-state", "ready");
      try {
        registry[root.id] = new Explorer(root);
      } catch (err) {
        root.setAttribute("data-rfx-state", "failed");
        var msg = root.querySelector(".rfx-info");
        if (msg) { msg.textContent = "The explorer failed to start: " + err; }
        throw err;
      }
    });
    // the layer table below (the report): a click on a row explores that layer
    var first = registry[roots.length ? roots[0].id : ""];
    if (!first) { return; }
    Array.prototype.forEach.call(document.querySelectorAll("table.trf tr[data-layer]"), function (tr) {
      var li = first.data.layers.map(function (L) { return L.name; }).indexOf(tr.getAttribute("data-layer"));
      if (li < 0) { return; }
      tr.classList.add("rfx-link");
      tr.title = "explore this layer";
      tr.addEventListener("click", function () { first.selectLayer(li); first.root.scrollIntoView({block: "start"}); });
    });
  }
  window.rflensExplorer = {Geo: Geo, interval: interval};
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
