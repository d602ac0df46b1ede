// Shared by both apps: the API key (typed once, kept in localStorage), authorised fetch,
// small DOM helpers. No secret ever lives in the page source.

const KEY_STORAGE = "omnirec.apiKey";

export function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

/** fetch() against the API with the stored key; JSON in and out. */
export async function api(path, { method = "GET", body, signal, headers = {} } = {}) {
  const init = {
    method,
    signal,
    headers: { Accept: "application/json", Authorization: `Bearer ${apiKey()}`, ...headers },
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    let detail = "";
    try {
      const payload = await response.json();
      detail = typeof payload.detail === "string" ? payload.detail : JSON.stringify(payload.detail);
    } catch {
      /* not JSON */
    }
    throw new ApiError(response.status, detail || response.statusText);
  }
  return response.status === 204 ? null : response.json();
}

/** Create an element: h("li", {class: "x", onclick: fn}, "text", child, ...). */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else {
      node.setAttribute(name, value === true ? "" : value);
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

export const money = (value) =>
  value === null || value === undefined ? "—" : Number(value).toFixed(2);
export const percent = (share, digits = 0) =>
  share === null || share === undefined ? "—" : `${(share * 100).toFixed(digits)}%`;

/** Tell screen-reader users (and everybody) what just happened. */
export function announce(message, kind = "info") {
  const status = document.getElementById("status");
  if (!status) return;
  status.textContent = message;
  status.dataset.kind = kind;
}

/**
 * Wire the key form in the header. `onReady` runs once a key is present (now or later).
 * The key is checked against a cheap authorised call before it is kept.
 */
export function setupKeyForm(onReady, checkPath = "/v1/catalog/search?q=a&limit=1") {
  const form = document.getElementById("key-form");
  const input = document.getElementById("api-key");
  const forget = document.getElementById("forget-key");
  const state = document.getElementById("key-state");

  const showState = () => {
    const has = Boolean(apiKey());
    state.textContent = has ? "Key saved on this device" : "No API key yet";
    forget.hidden = !has;
    document.body.classList.toggle("needs-key", !has);
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    const previous = apiKey();
    localStorage.setItem(KEY_STORAGE, key);
    try {
      await api(checkPath);
    } catch (error) {
      if (previous) localStorage.setItem(KEY_STORAGE, previous);
      else localStorage.removeItem(KEY_STORAGE);
      announce(`That key was refused: ${error.message}`, "error");
      showState();
      input.focus();
      return;
    }
    input.value = "";
    showState();
    announce("API key saved on this device.");
    onReady();
  });

  forget.addEventListener("click", () => {
    localStorage.removeItem(KEY_STORAGE);
    showState();
    announce("API key removed from this device.");
    input.focus();
  });

  showState();
  if (apiKey()) onReady();
  else input.focus();
}
