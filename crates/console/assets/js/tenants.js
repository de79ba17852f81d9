// Tenants, for platform admins: list, create, and look at one tenant.
import * as api from "./api.js";
import { h, fill, errorBox, when, field, toast } from "./ui.js";

export async function render(main, ctx) {
  if (!ctx.can("admin")) {
    fill(main, h("h1", null, "Tenants"), h("p", null, "Only platform admins manage tenants."));
    return;
  }
  const list = h("div", { class: "table-wrap" });
  const out = h("div", { "aria-live": "polite" });
  async function load() {
    try {
      const { tenants } = await api.get("/tenants");
      fill(list, h("table", null,
        h("thead", null, h("tr", null, ["Tenant", "Name", "Created", ""].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", null, tenants.map((t) => h("tr", null,
          h("td", { class: "mono" }, t.name), h("td", null, t.display_name || ""), h("td", null, when(t.created_at)),
          h("td", null, h("button", { type: "button", class: "secondary", onclick: () => {
            ctx.tenant = t.name;
            toast(`Looking at tenant ${t.name}`);
            document.getElementById("whoami").textContent = `${ctx.me.subject} · ${ctx.me.role} · viewing ${t.name}`;
            location.hash = "#/fleet";
          } }, ctx.tenant === t.name ? "Viewing" : "View")))))));
    } catch (e) {
      fill(list, errorBox(e));
    }
  }
  const name = h("input", { name: "name", required: true, pattern: "[a-z0-9][a-z0-9\\-]{0,62}", autocomplete: "off" });
  const display = h("input", { name: "display_name", autocomplete: "off" });
  fill(main,
    h("h1", null, "Tenants"),
    h("form", { class: "row panel", onsubmit: async (e) => {
      e.preventDefault();
      try {
        await api.post("/tenants", { name: name.value.trim(), display_name: display.value.trim() });
        toast("Tenant created");
        name.value = "";
        display.value = "";
        load();
      } catch (err) {
        fill(out, errorBox(err));
      }
    } }, field("Tenant name", name), field("Display name", display), h("button", { type: "submit" }, "Create")),
    out,
    list);
  await load();
}
