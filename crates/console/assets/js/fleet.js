// Fleet: the tenant's devices a page at a time, by id either way, searched and
// filtered on the server (an id prefix and a label selector), so it stays as
// fast with 100,000 devices as with 10.
import * as api from "./api.js";
import { h, fill, errorBox, when, copyButton, parsePairs, field, toast } from "./ui.js";

const PAGE = 50;

export async function render(main, ctx) {
  const state = { prefix: "", selector: "", order: "asc", tokens: [""], at: 0 };
  const counts = h("div", { class: "grid", "aria-live": "polite" });
  const table = h("div", { class: "table-wrap" });
  const pager = h("div", { class: "pager" });
  const created = h("div", { "aria-live": "polite" });
  const prefix = h("input", { type: "search", name: "prefix", placeholder: "pump-", autocomplete: "off" });
  const selector = h("input", { name: "selector", placeholder: "fleet=West,model!=H-1", autocomplete: "off", size: 28 });
  const search = h("form", { class: "row", role: "search", onsubmit: (e) => {
    e.preventDefault();
    state.prefix = prefix.value.trim();
    state.selector = selector.value.trim();
    state.tokens = [""];
    state.at = 0;
    load();
  } },
  field("Device id starts with", prefix),
  field("Labels (selector)", selector),
  h("button", { type: "submit" }, "Search"));

  async function load() {
    fill(table, h("p", { class: "muted" }, "Loading…"));
    try {
      const page = await api.get("/devices", {
        tenant: ctx.tenantParam(), prefix: state.prefix, selector: state.selector,
        order: state.order, page_size: PAGE, page_token: state.tokens[state.at],
      });
      if (page.next_page_token) state.tokens[state.at + 1] = page.next_page_token;
      else state.tokens.length = state.at + 1;
      drawCounts(page);
      drawTable(page.devices, Boolean(page.next_page_token));
      drawPager(page);
    } catch (e) {
      fill(table, errorBox(e));
    }
  }

  function drawCounts(page) {
    const online = page.devices.filter((d) => d.presence?.online).length;
    fill(counts,
      stat("Devices in the tenant", page.tenant_devices ?? "—", "devices-total"),
      stat("On this page", page.devices.length),
      stat("Online on this page", online));
  }

  function drawTable(devices, more) {
    if (!devices.length) {
      // A selector that matches few devices: each page scans a bounded
      // number of them, so an empty page can have more after it.
      fill(table, h("p", { class: "muted" }, more
        ? "No match among the devices searched so far: Next searches further."
        : state.prefix || state.selector ? "No device matches." : "No devices yet."));
      return;
    }
    fill(table, h("table", null,
      h("thead", null, h("tr", null,
        h("th", { scope: "col", "aria-sort": state.order === "asc" ? "ascending" : "descending" },
          h("button", { type: "button", "data-sort": "id", title: "Sort by device id the other way", onclick: () => {
            // Paging starts again from the other end.
            state.order = state.order === "asc" ? "desc" : "asc";
            state.tokens = [""];
            state.at = 0;
            load().then(() => table.querySelector("[data-sort]")?.focus());
          } }, "Device ", h("span", { "aria-hidden": "true" }, state.order === "asc" ? "▲" : "▼"))),
        h("th", { scope: "col" }, "Presence"),
        h("th", { scope: "col" }, "Labels"),
        h("th", { scope: "col", class: "hide-narrow" }, "Created"))),
      h("tbody", null, devices.map((d) => h("tr", null,
        h("td", null, h("a", { href: `#/devices/${encodeURIComponent(d.id)}` }, d.id),
          d.disabled ? h("span", { class: "tag warn" }, "disabled") : null),
        h("td", null, h("span", { class: d.presence?.online ? "dot on" : "dot", "aria-hidden": "true" }),
          d.presence?.online ? "online" : h("span", null, "last seen ", when(d.presence?.last_seen))),
        h("td", null, Object.entries(d.labels).map(([k, v]) => h("span", { class: "tag" }, `${k}=${v}`))),
        h("td", { class: "hide-narrow" }, when(d.created_at)))))));
  }

  function drawPager(page) {
    fill(pager,
      h("button", { type: "button", class: "secondary", disabled: state.at === 0, onclick: () => {
        state.at -= 1;
        load();
      } }, "← Previous"),
      h("span", { class: "muted" }, `Page ${state.at + 1}`),
      h("button", { type: "button", class: "secondary", disabled: !page.next_page_token, onclick: () => {
        state.at += 1;
        load();
      } }, "Next →"));
  }

  const newForm = ctx.can("operator") ? newDeviceForm(ctx, created, load) : null;
  fill(main,
    h("h1", null, "Fleet"),
    counts,
    search,
    newForm,
    created,
    table,
    pager);
  await load();
}

function stat(label, value, id) {
  return h("div", { class: "stat" }, h("div", { class: "muted" }, label),
    h("div", { class: "v", id }, typeof value === "number" ? value.toLocaleString() : value));
}

function newDeviceForm(ctx, out, reload) {
  const id = h("input", { name: "id", required: true, pattern: "[A-Za-z0-9_.:\\-]{1,128}", autocomplete: "off" });
  const labels = h("input", { name: "labels", placeholder: "fleet=West, model=H-2", size: 26 });
  const issue = h("input", { type: "checkbox", name: "issue_token", checked: true });
  return h("details", { class: "panel" },
    h("summary", null, "Add a device"),
    h("form", { class: "row", onsubmit: async (e) => {
      e.preventDefault();
      try {
        const body = { id: id.value.trim(), labels: parsePairs(labels.value), issue_token: issue.checked };
        if (ctx.tenantParam()) body.tenant = ctx.tenantParam();
        const made = await api.post("/devices", body);
        fill(out, h("div", { class: "panel" },
          h("p", { class: "ok" }, "Created ", h("a", { href: `#/devices/${encodeURIComponent(made.device.id)}` }, made.device.id), "."),
          made.token ? secretBox(made.token.token) : null));
        id.value = "";
        reload();
      } catch (err) {
        fill(out, errorBox(err));
      }
    } },
    field("Device id", id),
    field("Labels", labels),
    h("label", { class: "inline" }, issue, "Issue a token"),
    h("button", { type: "submit" }, "Add")));
}

/** A new secret, shown once, with a copy button. */
export function secretBox(secret) {
  toast("Copy the token now: it is not shown again");
  return h("div", null,
    h("p", null, "The device's token. It is shown only now:"),
    h("div", { class: "secret" }, h("code", { id: "new-token" }, secret), copyButton(secret, "Copy token")));
}
