// One device: its labels, latest values, a plot per metric (live, or a
// range drawn from windows that fit the plot), its credentials, and
// commands.
import * as api from "./api.js";
import { h, fill, errorBox, when, fmt, field, toast } from "./ui.js";
import { timePlot, windowFor, num, color, plotLibrary } from "./plot.js";
import { secretBox } from "./fleet.js";

const RANGES = [
  ["live", "Live (15 min)", 900], ["1h", "1 hour", 3600], ["6h", "6 hours", 21600],
  ["24h", "24 hours", 86400], ["7d", "7 days", 604800], ["30d", "30 days", 2592000],
  ["365d", "1 year", 31536000],
];
/** Most metrics plotted on one page. */
const MAX_PLOTS = 12;
/** Most raw points read for the live view. */
const LIVE_POINTS = 5000;

export async function render(main, ctx, [id]) {
  const tenant = ctx.tenantParam();
  let device;
  try {
    device = await api.get(`/devices/${encodeURIComponent(id)}`, { tenant });
  } catch (e) {
    fill(main, h("h1", null, id), errorBox(e));
    return;
  }
  const latestBox = h("div", { class: "table-wrap" });
  const plots = h("div");
  const rangeSel = h("select", { id: "range", name: "range" },
    RANGES.map(([v, label]) => h("option", { value: v }, label)));
  const status = h("span", { class: "muted", "aria-live": "polite" });
  // `drawn` counts drawPlots calls: a call overtaken by a newer one (a
  // range switch, a new metric) drops what it drew.
  const state = { range: "live", plots: new Map(), stop: null, metrics: [], drawn: 0, reloading: false };

  fill(main,
    h("p", null, h("a", { href: "#/fleet" }, "← Fleet")),
    h("h1", null, device.id, " ",
      h("span", { class: device.presence?.online ? "dot on" : "dot", "aria-hidden": "true" }),
      h("small", { class: "muted" }, device.presence?.online ? "online" : ["last seen ", when(device.presence?.last_seen)]),
      device.disabled ? h("span", { class: "tag warn" }, "disabled") : null),
    info(device),
    h("h2", null, "Latest values"),
    latestBox,
    h("h2", null, "Metrics"),
    h("div", { class: "row" }, field("Range", rangeSel), status),
    plots,
    ctx.can("operator") ? commandPanel(device, tenant) : null,
    credentialsPanel(device, ctx, tenant),
    ctx.can("operator") ? dangerPanel(device, tenant) : null);

  rangeSel.addEventListener("change", () => {
    state.range = rangeSel.value;
    drawPlots();
  });

  async function loadLatest() {
    try {
      const { values } = await api.get("/timeseries/latest", { tenant, device: device.id });
      values.sort((a, b) => a.metric.localeCompare(b.metric));
      state.metrics = values.map((v) => v.metric);
      fill(latestBox, values.length
        ? h("table", { id: "latest" }, h("thead", null, h("tr", null,
            h("th", { scope: "col" }, "Metric"), h("th", { scope: "col" }, "Value"), h("th", { scope: "col" }, "When"))),
          h("tbody", null, values.map((v) => h("tr", { dataset: { metric: v.metric } },
            h("td", { class: "mono" }, v.metric), h("td", { class: "value" }, fmt(v.value)), h("td", null, when(v.time))))))
        : h("p", { class: "muted", id: "no-data" }, "No data yet. Send a point, for example:",
          h("pre", { class: "mono" }, `curl -X POST http://${location.host}/v1/telemetry -H 'Authorization: Bearer <device token>' \\\n  -H 'Content-Type: application/json' -d '{"temp": 21.5}'`)));
    } catch (e) {
      fill(latestBox, errorBox(e));
    }
  }

  function setLatest(metric, time, value) {
    const row = latestBox.querySelector(`tr[data-metric="${CSS.escape(metric)}"]`);
    if (!row) return false;
    row.querySelector(".value").textContent = fmt(value);
    fill(row.lastElementChild, when(time));
    return true;
  }

  function clearPlots() {
    for (const p of state.plots.values()) p.plot?.destroy();
    state.plots.clear();
    plots.replaceChildren();
  }

  async function drawPlots() {
    const mine = ++state.drawn;
    clearPlots();
    const metrics = state.metrics.slice(0, MAX_PLOTS);
    if (state.metrics.length > MAX_PLOTS) {
      plots.append(h("p", { class: "muted" }, `Plotting the first ${MAX_PLOTS} of ${state.metrics.length} metrics.`));
    }
    const [, , span] = RANGES.find(([v]) => v === state.range);
    const live = state.range === "live";
    for (const m of metrics) {
      const el = h("div", { class: "plot", dataset: { metric: m }, role: "img", "aria-label": `${m} over the ${live ? "last 15 minutes, live" : "range"}` });
      plots.append(el);
      state.plots.set(m, { el, plot: null });
    }
    status.textContent = "Loading…";
    if (metrics.length) await plotLibrary();
    await Promise.all(metrics.map(async (m) => {
      const slot = state.plots.get(m);
      const stale = () => {
        if (mine === state.drawn) return false;
        slot.plot?.destroy();
        return true;
      };
      try {
        if (live) {
          const xs = [], ys = [];
          const r = await api.get("/timeseries/range", { tenant, device: device.id, metrics: m, from: `-${span}s`, limit: LIVE_POINTS, order: "desc" });
          const pts = (r.series[0]?.points || []).slice().reverse();
          for (const p of pts) {
            xs.push(Date.parse(p.time) / 1000);
            ys.push(num(p.value));
          }
          if (mine !== state.drawn) return;
          performance.mark(`plot-data:${m}`);
          slot.plot = timePlot(slot.el, m, [{ label: m }], [xs, ys], { live: span });
          stale();
        } else {
          const w = windowFor(span, slot.el.clientWidth || 800);
          const r = await api.get("/timeseries/aggregate", {
            tenant, device: device.id, metrics: m, from: `-${span}s`, window: w.name, functions: "avg,min,max",
          });
          const b = r.series[0]?.buckets || [];
          const xs = b.map((x) => Date.parse(x.start) / 1000);
          if (mine !== state.drawn) return;
          performance.mark(`plot-data:${m}`);
          slot.plot = timePlot(slot.el, `${m} (${w.name} windows, ${r.tier})`,
            [{ label: "avg", color: color(0) }, { label: "min", color: color(0), band: "min" }, { label: "max", color: color(0), band: "max" }],
            [xs, b.map((x) => x.avg ?? null), b.map((x) => x.min ?? null), b.map((x) => x.max ?? null)]);
          slot.el.dataset.window = w.name;
          stale();
        }
      } catch (e) {
        fill(slot.el, errorBox(e));
      }
    }));
    if (mine === state.drawn) status.textContent = live ? "Following live points" : "";
  }

  // Live points: the latest values and, in live mode, the plots.
  function onEvent(type, data) {
    if (type === "reset") {
      loadLatest().then(drawPlots);
      return;
    }
    if (type !== "points") return;
    const ev = JSON.parse(data);
    let unknown = false;
    for (const p of ev.points) {
      if (!setLatest(p.metric, p.time, p.value)) unknown = true;
      const slot = state.plots.get(p.metric);
      if (state.range === "live" && slot?.plot) slot.plot.append(Date.parse(p.time) / 1000, [num(p.value)]);
    }
    // A metric not seen before: read the metrics again, once at a time.
    if (unknown && !state.reloading) {
      state.reloading = true;
      loadLatest()
        .then(() => state.range === "live" && drawPlots())
        .finally(() => (state.reloading = false));
    }
  }

  await loadLatest();
  await drawPlots();
  state.stop = api.follow("/stream", { tenant, device: device.id }, onEvent, (s, err) => {
    if (s === "error") status.textContent = `Live updates paused: ${err?.message || "disconnected"}; retrying`;
    if (s === "open" && state.range === "live") status.textContent = "Following live points";
  });
  return () => {
    state.stop?.();
    clearPlots();
  };
}

function info(d) {
  const rows = [
    ...Object.entries(d.labels).map(([k, v]) => ["label", k, v]),
    ...Object.entries(d.metadata).map(([k, v]) => ["metadata", k, v]),
  ];
  return h("details", { class: "panel", open: true },
    h("summary", null, `Labels and metadata (${rows.length})`),
    rows.length ? h("table", null, h("tbody", null, rows.map(([kind, k, v]) =>
      h("tr", null, h("td", { class: "muted" }, kind), h("td", { class: "mono" }, k), h("td", null, v)))))
      : h("p", { class: "muted" }, "None."),
    h("p", { class: "muted" }, "Created ", when(d.created_at), d.presence?.frontend ? ` · frontend ${d.presence.frontend}` : ""));
}

function commandPanel(device, tenant) {
  const name = h("input", { id: "command-name", name: "name", required: true, value: "reboot", pattern: "[A-Za-z0-9_.:\\-]{1,64}" });
  const payload = h("input", { id: "command-payload", name: "payload", placeholder: "{\"delay\": 5}", size: 30 });
  const timeout = h("input", { id: "command-timeout", name: "timeout", type: "number", min: 100, max: 60000, value: 10000 });
  const out = h("div", { id: "command-outcome", "aria-live": "polite" });
  return h("section", { class: "panel" },
    h("h2", null, "Send a command"),
    h("form", { class: "row", onsubmit: async (e) => {
      e.preventDefault();
      const button = e.submitter;
      button.disabled = true;
      fill(out, h("p", { class: "muted" }, "Waiting for the device…"));
      try {
        const r = await api.post(`/devices/${encodeURIComponent(device.id)}/commands`,
          { name: name.value.trim(), payload: payload.value, timeout_ms: Number(timeout.value) }, { tenant });
        const good = r.status === "delivered_replied";
        fill(out, h("p", { class: good ? "ok" : "warn" }, h("strong", { class: "status" }, r.status.replaceAll("_", " ")),
          ` after ${(r.latency_us / 1000).toFixed(1)} ms`),
        r.reply !== null && r.reply !== undefined ? h("p", null, "Reply: ", h("code", { class: "reply" }, r.reply))
          : r.reply_base64 ? h("p", null, "Reply (base64): ", h("code", { class: "reply" }, r.reply_base64)) : null);
      } catch (err) {
        fill(out, errorBox(err));
      } finally {
        button.disabled = false;
      }
    } },
    field("Command", name), field("Payload", payload), field("Wait for the reply (ms)", timeout),
    h("button", { type: "submit", id: "command-send" }, "Send")),
    out);
}

function credentialsPanel(device, ctx, tenant) {
  const list = h("div", { class: "table-wrap" });
  const out = h("div", { "aria-live": "polite" });
  async function load() {
    try {
      const { credentials } = await api.get("/tokens", { tenant, device: device.id });
      fill(list, credentials.length ? h("table", null,
        h("thead", null, h("tr", null, ["Kind", "Name", "Created", "Expires", ""].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", null, credentials.map((c) => h("tr", null,
          h("td", null, c.kind.replaceAll("_", " ")),
          h("td", null, c.name || h("span", { class: "muted mono" }, c.id)),
          h("td", null, when(c.created_at)),
          h("td", null, c.expires_at ? when(c.expires_at) : "never"),
          h("td", null, c.revoked ? h("span", { class: "muted" }, "revoked")
            : ctx.can("operator") ? h("button", { type: "button", class: "secondary", onclick: async () => {
              if (!confirm(`Revoke ${c.kind.replaceAll("_", " ")} ${c.name || c.id}? The device can no longer use it.`)) return;
              try {
                await api.del(`/tokens/${encodeURIComponent(c.id)}`, { tenant });
                toast("Revoked");
                load();
              } catch (err) {
                fill(out, errorBox(err));
              }
            } }, "Revoke") : null)))))
        : h("p", { class: "muted" }, "No credentials."));
    } catch (e) {
      fill(list, errorBox(e));
    }
  }
  load();
  const pem = h("textarea", { name: "certificate_pem", rows: 5, placeholder: "-----BEGIN CERTIFICATE-----" });
  return h("section", { class: "panel" },
    h("h2", null, "Tokens and certificates"),
    list,
    ctx.can("operator") ? h("div", { class: "row" },
      h("button", { type: "button", id: "issue-token", onclick: async () => {
        try {
          const t = await api.post("/tokens", { kind: "device_token", device: device.id, name: `console ${new Date().toISOString().slice(0, 16)}`, ...(tenant ? { tenant } : {}) });
          fill(out, secretBox(t.token));
          load();
        } catch (err) {
          fill(out, errorBox(err));
        }
      } }, "Issue a token")) : null,
    ctx.can("operator") ? h("details", null, h("summary", null, "Register a TLS client certificate"),
      h("form", { onsubmit: async (e) => {
        e.preventDefault();
        try {
          await api.post(`/devices/${encodeURIComponent(device.id)}/certificates`, { certificate_pem: pem.value }, { tenant });
          toast("Certificate registered");
          pem.value = "";
          load();
        } catch (err) {
          fill(out, errorBox(err));
        }
      } }, h("label", null, "Certificate (PEM; its subject O= must be the tenant)", pem),
      h("div", { class: "row" }, h("button", { type: "submit" }, "Register")))) : null,
    out);
}

function dangerPanel(device, tenant) {
  const path = `/devices/${encodeURIComponent(device.id)}`;
  const out = h("div", { "aria-live": "polite" });
  const act = (label, f) => h("button", { type: "button", class: label === "Delete" ? "danger" : "secondary", onclick: async () => {
    if (label === "Delete" && !confirm(`Delete ${device.id}? Its credentials go with it; stored data stays until retention.`)) return;
    try {
      await f();
      if (label === "Delete") location.hash = "#/fleet";
      else location.reload();
    } catch (err) {
      fill(out, errorBox(err));
    }
  } }, label);
  return h("section", { class: "panel" },
    h("h2", null, "Device"),
    h("div", { class: "row" },
      device.disabled
        ? act("Enable", () => api.post(`${path}/enable`, undefined, { tenant }))
        : act("Disable", () => api.post(`${path}/disable`, undefined, { tenant })),
      act("Delete", () => api.del(path, { tenant }))),
    out);
}
