// The page snapshot, evaluated in the page by `actions::snapshot`.
//
// Tags every visible interactive element with `data-moltbot-ref="eN"` (an element keeps its
// ref across snapshots of the same document; new elements get the next number) and returns
// the page's visible text with whitespace collapsed, the tagged elements and the scroll state.
(() => {
  const ATTR = "data-moltbot-ref";
  const MAX_ELEMENTS = 400;
  const root = document.documentElement;
  let next = Number(root.getAttribute("data-moltbot-next") || "1");

  const clean = (s, max) => {
    s = String(s || "").replace(/\s+/g, " ").trim();
    return s.length > max ? s.slice(0, max - 1) + "…" : s;
  };

  const visible = (el) => {
    if (typeof el.checkVisibility === "function" &&
        !el.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true })) {
      return false;
    }
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  };

  const INPUT_ROLES = {
    button: "button", submit: "button", reset: "button", image: "button",
    checkbox: "checkbox", radio: "radio", range: "slider", number: "spinbutton",
    search: "searchbox", file: "file", color: "color", date: "date",
    "datetime-local": "datetime", time: "time", month: "month", week: "week",
  };

  const roleOf = (el) => {
    const explicit = el.getAttribute("role");
    if (explicit) return explicit.trim().split(/\s+/)[0];
    const tag = el.tagName.toLowerCase();
    if (tag === "a") return "link";
    if (tag === "button" || tag === "summary") return "button";
    if (tag === "select") return el.multiple ? "listbox" : "combobox";
    if (tag === "textarea") return "textbox";
    if (tag === "input") return INPUT_ROLES[(el.type || "text").toLowerCase()] || "textbox";
    if (el.isContentEditable) return "textbox";
    return tag;
  };

  const nameOf = (el) => {
    const by = el.getAttribute("aria-labelledby");
    if (by) {
      const t = by.split(/\s+/)
        .map((id) => (document.getElementById(id) || {}).innerText || "")
        .join(" ");
      if (clean(t, 10)) return t;
    }
    const aria = el.getAttribute("aria-label");
    if (aria && aria.trim()) return aria;
    const tag = el.tagName.toLowerCase();
    if (tag === "input") {
      const type = (el.type || "").toLowerCase();
      if (type === "submit" || type === "button" || type === "reset") return el.value || type;
      if (type === "image") return el.alt || "";
    }
    if (el.labels && el.labels.length) {
      return Array.from(el.labels).map((l) => l.innerText).join(" ");
    }
    if (tag !== "input" && tag !== "select" && tag !== "textarea") {
      const t = el.innerText;
      if (t && t.trim()) return t;
      const img = el.querySelector("img[alt]");
      if (img && img.alt) return img.alt;
    }
    return el.getAttribute("title") || el.getAttribute("name") || "";
  };

  const SELECTOR = [
    "a[href]", "button", "input", "select", "textarea", "summary",
    "[contenteditable='']", "[contenteditable='true']",
    ...["button", "link", "checkbox", "radio", "switch", "tab", "menuitem", "option",
        "textbox", "searchbox", "combobox"].map((r) => `[role='${r}']`),
  ].join(",");

  const seen = new Set();
  const elements = [];
  let total = 0;
  for (const el of document.querySelectorAll(SELECTOR)) {
    if (el.tagName === "INPUT" && el.type === "hidden") continue;
    if (!visible(el)) continue;
    total += 1;
    if (elements.length >= MAX_ELEMENTS) continue;
    let ref = el.getAttribute(ATTR);
    // A copied element (cloneNode) carries its original's ref: give it its own.
    if (!ref || seen.has(ref)) {
      ref = "e" + next++;
      el.setAttribute(ATTR, ref);
    }
    seen.add(ref);
    const item = { ref, role: roleOf(el), name: clean(nameOf(el), 100) };
    if (el.tagName === "A" && el.href) {
      item.href = el.href.startsWith(location.origin + "/")
        ? el.href.slice(location.origin.length)
        : el.href;
    }
    if (el.placeholder) item.placeholder = clean(el.placeholder, 60);
    const type = (el.type || "").toLowerCase();
    if (type === "checkbox" || type === "radio") {
      item.checked = !!el.checked;
    } else if (el.tagName === "SELECT") {
      item.value = clean(Array.from(el.selectedOptions).map((o) => o.text).join(", "), 60);
    } else if ((el.tagName === "INPUT" || el.tagName === "TEXTAREA") &&
               !["submit", "button", "reset", "image"].includes(type) && el.value) {
      item.value = type === "password" ? "•••" : clean(el.value, 60);
    }
    if (el.disabled) item.disabled = true;
    elements.push(item);
  }
  root.setAttribute("data-moltbot-next", String(next));

  const text = (document.body ? document.body.innerText : "")
    .replace(/[ \t\u00a0\u200b]+/g, " ")
    .replace(/ ?\n[\s]*/g, "\n")
    .trim();

  return {
    title: document.title || "",
    url: location.href,
    text,
    elements,
    total_elements: total,
    scroll_y: Math.round(window.scrollY),
    scroll_height: Math.round(document.documentElement.scrollHeight),
    viewport_height: Math.round(window.innerHeight),
  };
})()
