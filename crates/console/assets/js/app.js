// The console's shell: sign in and out, the role, the pages by URL hash.
import * as api from "./api.js";
import { h, fill, errorBox, toast } from "./ui.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const whoami = document.getElementById("whoami");
const signout = document.getElementById("signout");

/** What every page gets: who is signed in, and the tenant being looked at. */
const ctx = {
  me: null,
  tenant: "",
  /** The `tenant` parameter for API calls: empty for the token's own. */
  tenantParam() {
    return this.tenant && this.tenant !== this.me.tenant ? this.tenant : "";
  },
  can(role) {
    const rank = { viewer: 0, operator: 1, admin: 2 };
    return rank[this.me.role] >= rank[role];
  },
};

const pages = {
  fleet: () => import("./fleet.js"),
  devices: () => import("./device.js"),
  charts: () => import("./charts.js"),
  alerts: () => import("./alerts.js"),
  tenants: () => import("./tenants.js"),
};

let cleanup = null;

async function route() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  if (!ctx.me) return signIn();
  const [name, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const page = pages[name] ? name : "fleet";
  for (const a of nav.querySelectorAll("a")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  fill(main, h("p", { class: "muted" }, "Loading…"));
  try {
    const mod = await pages[page]();
    const args = rest.map(decodeURIComponent);
    cleanup = (await mod.render(main, ctx, args)) || null;
  } catch (e) {
    fill(main, h("h1", null, "Something went wrong"), errorBox(e));
  }
  main.focus({ preventScroll: true });
}

function signIn(message) {
  nav.hidden = true;
  signout.hidden = true;
  whoami.textContent = "";
  const input = h("input", {
    id: "token", name: "token", type: "password", required: true, autocomplete: "off",
    spellcheck: "false", "aria-describedby": "token-help",
  });
  const status = h("div", { "aria-live": "polite" }, message ? h("p", { class: "error" }, message) : null);
  const form = h("form", { class: "panel signin", onsubmit: async (e) => {
    e.preventDefault();
    const t = input.value.trim();
    try {
      const me = await api.call("GET", "/whoami", { auth: t });
      api.setToken(t);
      start(me);
    } catch (err) {
      fill(status, errorBox(err));
    }
  } },
  h("h1", null, "Sign in"),
  h("label", { for: "token" }, "Operator token"),
  input,
  h("p", { id: "token-help", class: "muted" },
    "An operator token (a JWT), from ", h("code", null, "tributary operator-token"),
    " or the bootstrap admin token that standalone wrote at its first start. ",
    "It is kept in this tab only (sessionStorage) and is gone when you sign out or close the tab."),
  h("div", { class: "row" }, h("button", { type: "submit" }, "Sign in")),
  status);
  fill(main, form);
  input.focus();
}

function start(me) {
  ctx.me = me;
  ctx.tenant = me.tenant;
  nav.hidden = false;
  signout.hidden = false;
  for (const a of nav.querySelectorAll("[data-role]")) a.hidden = !ctx.can(a.dataset.role);
  whoami.textContent = `${me.subject} · ${me.role} · ${me.tenant}`;
  route();
}

function signOut(message) {
  api.clearToken();
  ctx.me = null;
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  history.replaceState(null, "", location.pathname);
  signIn(message);
}

signout.addEventListener("click", () => {
  signOut();
  toast("Signed out: the token is gone from this tab");
});
api.whenUnauthorized(() => signOut("The server no longer accepts the token (expired or revoked): sign in again."));
window.addEventListener("hashchange", route);

// Light or dark: the system's, unless the user chose.
const theme = document.getElementById("theme");
function applyTheme(t) {
  const dark = t ? t === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = dark ? "dark" : "light";
  theme.setAttribute("aria-pressed", String(dark));
}
applyTheme(localStorage.getItem("tributary.theme"));
theme.addEventListener("click", () => {
  const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  localStorage.setItem("tributary.theme", next);
  applyTheme(next);
  window.dispatchEvent(new Event("themechange"));
});

// A token from an earlier load of this tab.
(async () => {
  const t = api.token();
  if (!t) return signIn();
  try {
    start(await api.call("GET", "/whoami", { auth: t }));
  } catch (e) {
    api.clearToken();
    signIn(e.status === 401 ? "The token is no longer accepted: sign in again." : String(e.message));
  }
})();
