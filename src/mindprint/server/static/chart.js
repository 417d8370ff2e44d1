// A small line chart on a <canvas>: several series, nice axis ticks, a legend. No library.
// chart.canvas.dataset.points holds the number of points drawn (the browser test reads it).

export const COLORS = ['#2f6fdf', '#e4572e', '#17a398', '#f3a712', '#8e44ad', '#4c5b61', '#c2185b', '#6a994e'];

function niceStep(range, ticks) {
  const raw = range / Math.max(1, ticks);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const n = raw / mag;
  return (n < 1.5 ? 1 : n < 3 ? 2 : n < 7 ? 5 : 10) * mag;
}

function fmt(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1);
  return Number(v.toPrecision(4)).toString();
}

export class LineChart {
  constructor(parent, title, { yLabel = '', logY = false } = {}) {
    this.box = document.createElement('div');
    this.box.className = 'chart';
    this.box.innerHTML = `<div class="muted" style="font-weight:600;padding:2px 4px">${title}</div>`;
    this.canvas = document.createElement('canvas');
    this.canvas.dataset.points = '0';
    this.canvas.dataset.title = title;
    this.box.appendChild(this.canvas);
    parent.appendChild(this.box);
    this.series = new Map();   // name -> {points: [[x, y]], color}
    this.yLabel = yLabel; this.logY = logY;
    this._pending = false;
    new ResizeObserver(() => this.draw()).observe(this.canvas);
  }

  setSeries(name, points, color) {
    const s = this.series.get(name) || { points: [], color: color || COLORS[this.series.size % COLORS.length] };
    s.points = points;
    this.series.set(name, s);
    this.schedule();
  }

  add(name, x, y, color) {
    if (typeof y !== 'number' || !isFinite(y)) return;
    const s = this.series.get(name) || { points: [], color: color || COLORS[this.series.size % COLORS.length] };
    s.points.push([x, y]);
    this.series.set(name, s);
    this.schedule();
  }

  clear() { this.series.clear(); this.schedule(); }

  schedule() {
    if (this._pending) return;
    this._pending = true;
    requestAnimationFrame(() => { this._pending = false; this.draw(); });
  }

  draw() {
    const c = this.canvas, dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth || 500, h = c.clientHeight || 240;
    c.width = w * dpr; c.height = h * dpr;
    const g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const all = [...this.series.values()].flatMap(s => s.points);
    c.dataset.points = String(all.length);
    g.font = '11px system-ui, sans-serif';
    if (!all.length) {
      g.fillStyle = '#98a2b3'; g.fillText('no data yet', w / 2 - 30, h / 2);
      return;
    }
    const L = 56, R = 12, T = 10, B = 38;
    let [x0, x1] = [Math.min(...all.map(p => p[0])), Math.max(...all.map(p => p[0]))];
    let [y0, y1] = [Math.min(...all.map(p => p[1])), Math.max(...all.map(p => p[1]))];
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) { const d = Math.abs(y0) * 0.05 || 1; y0 -= d; y1 += d; }
    const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
    const X = x => L + (x - x0) / (x1 - x0) * (w - L - R);
    const Y = y => T + (1 - (y - y0) / (y1 - y0)) * (h - T - B);
    // grid and ticks
    g.strokeStyle = '#eef1f5'; g.fillStyle = '#667085'; g.lineWidth = 1;
    const ys = niceStep(y1 - y0, 5);
    for (let v = Math.ceil(y0 / ys) * ys; v <= y1; v += ys) {
      g.beginPath(); g.moveTo(L, Y(v)); g.lineTo(w - R, Y(v)); g.stroke();
      g.fillText(fmt(v), 4, Y(v) + 4);
    }
    const xs = Math.max(1, niceStep(x1 - x0, 6));
    for (let v = Math.ceil(x0 / xs) * xs; v <= x1; v += xs) {
      g.beginPath(); g.moveTo(X(v), T); g.lineTo(X(v), h - B); g.stroke();
      g.fillText(fmt(v), X(v) - 8, h - B + 14);
    }
    g.fillText('step', w - R - 24, h - 9);
    g.strokeStyle = '#cfd4dc';
    g.strokeRect(L, T, w - L - R, h - T - B);
    // series
    let lx = L;
    for (const [name, s] of this.series) {
      const pts = s.points.slice().sort((a, b) => a[0] - b[0]);
      g.strokeStyle = s.color; g.fillStyle = s.color; g.lineWidth = 1.8;
      g.beginPath();
      pts.forEach(([x, y], i) => (i ? g.lineTo(X(x), Y(y)) : g.moveTo(X(x), Y(y))));
      g.stroke();
      if (pts.length < 40) pts.forEach(([x, y]) => { g.beginPath(); g.arc(X(x), Y(y), 2.5, 0, 7); g.fill(); });
      g.fillRect(lx, h - 14, 10, 3);
      g.fillStyle = '#344054';
      g.fillText(name, lx + 14, h - 9);
      lx += 24 + g.measureText(name).width;
    }
  }
}
