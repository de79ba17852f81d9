// Time plots on uPlot (vendored: /console/vendor/uPlot.iife.min.js, MIT).
// A plot draws what it is given; which points to ask for (raw or windows
// that fit the plot's pixels) is the caller's choice.

let loading = null;

/**
 * Loads uPlot (script and styles) once, on the first page that plots: the
 * sign-in and fleet pages do without its 50 KB.
 */
export function plotLibrary() {
  loading ??= new Promise((resolve, reject) => {
    const css = document.createElement("link");
    css.rel = "stylesheet";
    css.href = "/console/vendor/uPlot.min.css";
    document.head.append(css);
    const js = document.createElement("script");
    js.src = "/console/vendor/uPlot.iife.min.js";
    js.onload = () => resolve(window.uPlot);
    js.onerror = () => {
      loading = null;
      reject(new Error("could not load the plotting library"));
    };
    document.head.append(js);
  });
  return loading;
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"];

export function color(i) {
  return COLORS[i % COLORS.length];
}

function themed() {
  const css = getComputedStyle(document.documentElement);
  return { fg: css.getPropertyValue("--fg").trim(), grid: css.getPropertyValue("--plot-grid").trim() };
}

/**
 * A plot in `el`. `series`: [{ label, color?, band? }] where `band` marks
 * a pair of min/max lines drawn as a shaded band. `data`: [xs (seconds),
 * ys…]. Returns { update(data), append(x, ys), destroy() }. Each draw is
 * timed: the last as `el.dataset.drawMs`, and as a Performance API measure
 * named `plot-draw` (what the browser test reads).
 */
export function timePlot(el, title, series, data, { live = false, maxPoints = 20000 } = {}) {
  const uPlot = window.uPlot;
  const t = themed();
  const axis = { stroke: t.fg, grid: { stroke: t.grid }, ticks: { stroke: t.grid } };
  const opts = {
    title,
    width: Math.max(280, el.clientWidth || 600),
    height: 240,
    scales: { x: { time: true } },
    axes: [axis, { ...axis, size: 60 }],
    cursor: { drag: { x: true, y: false } },
    series: [{}, ...series.map((s, i) => ({
      label: s.label,
      stroke: s.color || color(i),
      width: s.band ? 0.5 : 1.5,
      fill: undefined,
      spanGaps: false,
      points: { show: false },
    }))],
    bands: [],
  };
  // min/max pairs, shaded between.
  series.forEach((s, i) => {
    if (s.band === "max") opts.bands.push({ series: [i + 1, i], fill: hexA(s.color || color(i), 0.15) });
  });
  const start = performance.now();
  const u = new uPlot(opts, data, el);
  mark(el, start, u);
  const resize = new ResizeObserver(() => u.setSize({ width: Math.max(280, el.clientWidth), height: 240 }));
  resize.observe(el);
  const onTheme = () => {
    const c = themed();
    for (const a of u.axes) {
      a.stroke = () => c.fg;
    }
    u.redraw(false, true);
  };
  window.addEventListener("themechange", onTheme);
  return {
    u,
    update(next) {
      const s = performance.now();
      u.setData(next);
      mark(el, s, u);
    },
    /** One live point: x in seconds, ys per series (null where none). */
    append(x, ys) {
      const d = u.data.map((a) => Array.from(a));
      d[0].push(x);
      ys.forEach((y, i) => d[i + 1].push(y));
      // Keep the live window: at most maxPoints, and from x − the span.
      let drop = Math.max(0, d[0].length - maxPoints);
      if (live) {
        const from = x - live;
        while (drop < d[0].length && d[0][drop] < from) drop++;
      }
      if (drop) d.forEach((a) => a.splice(0, drop));
      u.setData(d);
      el.dataset.points = String(d[0].length);
    },
    destroy() {
      resize.disconnect();
      window.removeEventListener("themechange", onTheme);
      u.destroy();
    },
  };
}

function mark(el, start, u) {
  const ms = performance.now() - start;
  el.dataset.points = String(u.data[0].length);
  el.dataset.drawMs = ms.toFixed(1);
  try {
    performance.measure("plot-draw", { start, duration: ms });
  } catch {
    // An older browser without measure options: the dataset has it.
  }
}

function hexA(hex, a) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${a})`;
}

/** Window widths the planner answers from rollups when they divide. */
const WINDOWS = [
  [10, "10s"], [30, "30s"], [60, "1m"], [120, "2m"], [300, "5m"], [600, "10m"], [900, "15m"],
  [1800, "30m"], [3600, "1h"], [7200, "2h"], [10800, "3h"], [21600, "6h"], [43200, "12h"],
  [86400, "1d"], [172800, "2d"], [604800, "7d"],
];

/**
 * The window for `rangeSeconds` drawn on `pixels`: the narrowest of the
 * round widths that gives at most one window per pixel, so a year costs
 * what an hour does.
 */
export function windowFor(rangeSeconds, pixels) {
  const want = rangeSeconds / Math.max(100, pixels);
  for (const [s, name] of WINDOWS) if (s >= want) return { seconds: s, name };
  const [s, name] = WINDOWS[WINDOWS.length - 1];
  return { seconds: s, name };
}

/** A sample value as a plottable number, or null. */
export function num(v) {
  if (typeof v === "number") return Number.isFinite(v) ? v : null;
  if (typeof v === "boolean") return v ? 1 : 0;
  return null;
}
