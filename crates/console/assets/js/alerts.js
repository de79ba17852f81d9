// Alerts and rules: the alerts (firing first), acknowledge; the rules,
// create and delete; silences.
import * as api from "./api.js";
import { h, fill, errorBox, when, fmt, field, toast } from "./ui.js";

export async function render(main, ctx) {
  const tenant = ctx.tenantParam();
  const operator = ctx.can("operator");
  const alerts = h("div", { class: "table-wrap" });
  const rules = h("div", { class: "table-wrap" });
  const silences = h("div", { class: "table-wrap" });
  const out = h("div", { "aria-live": "polite" });
  const stateSel = h("select", { name: "state" },
    [["firing", "Firing"], ["pending", "Pending"], ["acknowledged", "Acknowledged"], ["resolved", "Resolved"], ["", "All"]]
      .map(([v, l]) => h("option", { value: v }, l)));
  stateSel.addEventListener("change", () => loadAlerts());

  async function loadAlerts() {
    try {
      const r = await api.get("/alerting/alerts", { tenant, state: stateSel.value, limit: 200 });
      fill(alerts, r.alerts.length ? h("table", null,
        h("thead", null, h("tr", null, ["Severity", "Rule", "Device", "Metric", "Value", "Since", "State", ""].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", null, r.alerts.map((a) => h("tr", null,
          h("td", { class: a.severity === "critical" ? "error" : a.severity === "warning" ? "warn" : "" }, a.severity),
          h("td", { class: "mono" }, a.rule),
          h("td", null, h("a", { href: `#/devices/${encodeURIComponent(a.device)}` }, a.device)),
          h("td", { class: "mono" }, a.metric),
          h("td", null, fmt(a.value)),
          h("td", null, when(a.fired_at || a.started_at)),
          // An acknowledgement leaves the alert firing until it resolves.
          h("td", null, a.state, a.acknowledged_by ? `, acknowledged by ${a.acknowledged_by}` : ""),
          h("td", null, operator && !a.acknowledged_by && (a.state === "firing" || a.state === "pending")
            ? h("button", { type: "button", class: "secondary", onclick: async () => {
              try {
                await api.post(`/alerting/alerts/${encodeURIComponent(a.alert_id)}/ack`, { tenant, comment: "from the console" });
                toast("Acknowledged");
                loadAlerts();
              } catch (err) {
                fill(out, errorBox(err));
              }
            } }, "Acknowledge") : null)))),
        r.truncated ? h("caption", null, "The first 200; narrow the filter for the rest.") : null)
        : h("p", { class: "muted" }, "No alerts in that state."));
    } catch (e) {
      fill(alerts, errorBox(e));
    }
  }

  async function loadRules() {
    try {
      const r = await api.get("/alerting/rules", { tenant, page_size: 200 });
      fill(rules, r.rules.length ? h("table", null,
        h("thead", null, h("tr", null, ["Rule", "Target", "Metric", "Condition", "For", "Severity", ""].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", null, r.rules.map((x) => h("tr", null,
          h("td", { class: "mono" }, x.name),
          h("td", null, x.device ? `device ${x.device}` : `selector ${x.selector || "(all)"}`),
          h("td", { class: "mono" }, x.metric),
          h("td", null, describe(x.condition)),
          h("td", null, x.for || "0s"),
          h("td", null, x.severity),
          h("td", null, operator ? h("div", { class: "row" },
            h("button", { type: "button", class: "secondary", onclick: async () => {
              try {
                await api.post("/alerting/silences", { tenant, rule: x.name, for: "1h", comment: "from the console" });
                toast(`${x.name} silenced for an hour`);
                loadSilences();
              } catch (err) {
                fill(out, errorBox(err));
              }
            } }, "Silence 1 h"),
            h("button", { type: "button", class: "danger", onclick: async () => {
              if (!confirm(`Delete the rule ${x.name}?`)) return;
              try {
                await api.del(`/alerting/rules/${encodeURIComponent(x.name)}`, { tenant });
                loadRules();
              } catch (err) {
                fill(out, errorBox(err));
              }
            } }, "Delete")) : null)))))
        : h("p", { class: "muted" }, "No rules yet."));
    } catch (e) {
      fill(rules, errorBox(e));
    }
  }

  async function loadSilences() {
    try {
      const r = await api.get("/alerting/silences", { tenant });
      fill(silences, r.silences.length ? h("table", null, h("tbody", null, r.silences.map((s) => h("tr", null,
        h("td", { class: "mono" }, s.rule), h("td", null, s.device || "every device"), h("td", null, "until ", when(s.until)),
        h("td", null, s.comment), h("td", null, operator ? h("button", { type: "button", class: "secondary", onclick: async () => {
          try {
            await api.del(`/alerting/silences/${encodeURIComponent(s.rule)}`, { tenant, device: s.device || "" });
            loadSilences();
          } catch (err) {
            fill(out, errorBox(err));
          }
        } }, "End") : null)))))
        : h("p", { class: "muted" }, "No silences."));
    } catch (e) {
      fill(silences, errorBox(e));
    }
  }

  fill(main,
    h("h1", null, "Alerts"),
    h("div", { class: "row" }, field("State", stateSel)),
    alerts,
    out,
    h("h2", null, "Rules"),
    rules,
    operator ? ruleForm(tenant, out, loadRules) : null,
    h("h2", null, "Silences"),
    silences);
  await Promise.all([loadAlerts(), loadRules(), loadSilences()]);
}

function describe(c) {
  if (!c) return "";
  switch (c.type) {
    case "threshold": return c.op === "outside" ? `outside [${c.value}, ${c.high}]` : `${c.op} ${c.value}`;
    case "no_data": return `no data for ${c.timeout}`;
    case "offline": return `offline for ${c.grace || "0s"}`;
    case "rate_of_change": return `${c.direction} by more than ${c.bound} over ${c.window}`;
    case "anomaly": return "anomaly (EWMA)";
    default: return c.type;
  }
}

function ruleForm(tenant, out, reload) {
  const name = h("input", { name: "name", required: true, pattern: "[a-z0-9._\\-]{1,64}", autocomplete: "off" });
  const target = h("input", { name: "target", placeholder: "fleet=West (or a device id)", autocomplete: "off" });
  const byDevice = h("input", { type: "checkbox", name: "by_device" });
  const metric = h("input", { name: "metric", required: true, autocomplete: "off" });
  const kind = h("select", { name: "kind" },
    [["above", "above"], ["below", "below"], ["no_data", "no data for"]].map(([v, l]) => h("option", { value: v }, l)));
  const value = h("input", { name: "value", required: true, placeholder: "30 or 10m", size: 8 });
  const forD = h("input", { name: "for", placeholder: "5m", size: 6 });
  const severity = h("select", { name: "severity" }, ["warning", "critical", "info"].map((s) => h("option", { value: s }, s)));
  return h("details", { class: "panel" }, h("summary", null, "Create a rule"),
    h("p", { class: "muted" }, "\"No data for\" fires when a device sends nothing for the metric within the time given."),
    h("form", { class: "row", onsubmit: async (e) => {
      e.preventDefault();
      const condition = kind.value === "no_data"
        ? { type: "no_data", timeout: value.value.trim() }
        : { type: "threshold", op: kind.value, value: Number(value.value) };
      const body = { name: name.value.trim(), metric: metric.value.trim(), condition, severity: severity.value };
      if (forD.value.trim()) body.for = forD.value.trim();
      if (byDevice.checked) body.device = target.value.trim();
      else body.selector = target.value.trim();
      if (tenant) body.tenant = tenant;
      try {
        await api.post("/alerting/rules", body);
        toast("Rule created");
        reload();
      } catch (err) {
        fill(out, errorBox(err));
      }
    } },
    field("Name", name), field("Devices", target), h("label", { class: "inline" }, byDevice, "one device"),
    field("Metric", metric), field("Condition", kind), field("Value or time", value), field("For", forD),
    field("Severity", severity), h("button", { type: "submit" }, "Create")));
}
