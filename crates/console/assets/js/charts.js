// Fleet charts: one metric aggregated over devices, grouped by a label
// (average load per fleet over the last day), from the aggregate API.
import * as api from "./api.js";
import { h, fill, errorBox, field } from "./ui.js";
import { timePlot, windowFor, plotLibrary } from "./plot.js";

const RANGES = [["1h", 3600], ["6h", 21600], ["24h", 86400], ["7d", 604800], ["30d", 2592000], ["365d", 31536000]];

export async function render(main, ctx) {
  const tenant = ctx.tenantParam();
  const metric = h("input", { name: "metric", required: true, placeholder: "temp", autocomplete: "off" });
  const label = h("input", { name: "group_by", required: true, placeholder: "fleet", value: "fleet", autocomplete: "off" });
  const selector = h("input", { name: "selector", placeholder: "every device with the label", autocomplete: "off", size: 24 });
  const fn = h("select", { name: "function" }, ["avg", "min", "max", "sum", "count"].map((f) => h("option", { value: f }, f)));
  const range = h("select", { name: "range" }, RANGES.map(([r]) => h("option", { value: r, selected: r === "24h" }, r)));
  const out = h("div", { class: "plot", id: "fleet-plot" });
  let plot = null;
  fill(main,
    h("h1", null, "Fleet charts"),
    h("p", { class: "muted" }, "One metric over many devices, grouped by a label's value, from rollups where they answer."),
    h("form", { class: "row", onsubmit: async (e) => {
      e.preventDefault();
      plot?.destroy();
      plot = null;
      fill(out, h("p", { class: "muted" }, "Loading…"));
      const span = RANGES.find(([r]) => r === range.value)[1];
      const w = windowFor(span, out.clientWidth || 800);
      try {
        const r = await api.get("/timeseries/aggregate", {
          // No selector: every device with the label.
          tenant, selector: selector.value.trim() || label.value.trim(), metrics: metric.value.trim(), from: `-${span}s`,
          window: w.name, functions: fn.value, group_by: label.value.trim(),
        });
        if (!r.series.length) {
          fill(out, h("p", { class: "muted" }, "No data for that metric in the range."));
          return;
        }
        // One x axis: the union of the groups' window starts.
        const xs = [...new Set(r.series.flatMap((s) => s.buckets.map((b) => Date.parse(b.start) / 1000)))].sort((a, b) => a - b);
        const at = new Map(xs.map((x, i) => [x, i]));
        const ys = r.series.map((s) => {
          const y = new Array(xs.length).fill(null);
          for (const b of s.buckets) y[at.get(Date.parse(b.start) / 1000)] = b[fn.value] ?? null;
          return y;
        });
        await plotLibrary();
        out.replaceChildren();
        plot = timePlot(out, `${fn.value} of ${metric.value} by ${label.value} (${w.name} windows, ${r.tier})`,
          r.series.map((s) => ({ label: `${s.group || "(none)"} · ${s.devices} devices` })), [xs, ...ys]);
      } catch (err) {
        fill(out, errorBox(err));
      }
    } },
    field("Metric", metric), field("Group by label", label), field("Devices (selector)", selector),
    field("Function", fn), field("Range", range), h("button", { type: "submit" }, "Draw")),
    out);
  return () => plot?.destroy();
}
