// Small DOM helpers. Text from the server is only ever set as text, never
// as HTML: a label or a value a device sent cannot become markup.

/**
 * Makes an element: h("button", { class: "x", onclick: f }, "text", child…).
 * Attributes starting with "on" are listeners; `null`/`false` ones are left
 * out; children may be strings, nodes, arrays or null.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let toastTimer;
/** A short message at the bottom of the page, read out by screen readers. */
export function toast(msg) {
  const el = document.getElementById("toast");
  el.textContent = msg;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.textContent = ""), 4000);
}

/** An error as a paragraph, with the problem's field violations. */
export function errorBox(err) {
  const lines = err.details ? err.details() : [];
  const retry = err.retryAfter ? ` Retry in ${err.retryAfter} s.` : "";
  return h("div", { class: "error", role: "alert" },
    h("p", null, String(err.message || err) + retry),
    lines.length ? h("ul", null, lines.map((l) => h("li", null, l))) : null);
}

/** "3 min ago", "in 2 h", from an RFC 3339 time. */
export function ago(rfc3339) {
  if (!rfc3339) return "never";
  const t = Date.parse(rfc3339);
  if (Number.isNaN(t)) return rfc3339;
  const s = Math.round((Date.now() - t) / 1000);
  const a = Math.abs(s);
  const [n, unit] = a < 60 ? [a, "s"] : a < 3600 ? [Math.round(a / 60), "min"]
    : a < 86400 ? [Math.round(a / 3600), "h"] : [Math.round(a / 86400), "d"];
  return s >= 0 ? `${n} ${unit} ago` : `in ${n} ${unit}`;
}

/** A time as the user's locale shows it, with the full time as a tooltip. */
export function when(rfc3339) {
  if (!rfc3339) return h("span", { class: "muted" }, "never");
  return h("time", { datetime: rfc3339, title: rfc3339 }, ago(rfc3339));
}

/** A sample value for display. */
export function fmt(v) {
  if (typeof v === "number") {
    if (Number.isInteger(v)) return v.toLocaleString();
    return Math.abs(v) >= 1000 || Math.abs(v) < 0.01 && v !== 0
      ? v.toPrecision(6) : v.toFixed(3).replace(/\.?0+$/, "");
  }
  if (v === null || v === undefined) return "—";
  return String(v);
}

/** A button that copies `text` and says so. */
export function copyButton(text, label = "Copy") {
  return h("button", {
    type: "button", class: "secondary",
    onclick: async (e) => {
      try {
        await navigator.clipboard.writeText(text);
        e.target.textContent = "Copied";
        toast("Copied to the clipboard");
      } catch {
        toast("The browser refused the clipboard: select the text and copy it");
      }
    },
  }, label);
}

/** `k=v, k2=v2` as an object; throws on a malformed pair. */
export function parsePairs(text) {
  const out = {};
  for (const part of text.split(",").map((s) => s.trim()).filter(Boolean)) {
    const eq = part.indexOf("=");
    if (eq <= 0) throw new Error(`"${part}" is not key=value`);
    out[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  return out;
}

/** A labelled input: label(text, input). */
export function field(text, input) {
  return h("label", null, text, input);
}
