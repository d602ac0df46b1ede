// The checkout assistant: identify the customer, build the basket, see their profile at a
// glance, cross-sell for the basket and the next best offer (with feedback).
import { announce, api, ApiError, debounce, h, money, percent, setupKeyForm } from "./common.js";

const $ = (id) => document.getElementById(id);

const state = {
  customerId: null, // null: anonymous shopper
  profile: null,
  basket: new Map(), // sku -> {sku, name, price, qty}
  searchAbort: null,
  crossAbort: null,
  offerAbort: null,
  searchResults: [],
};

const CHANNEL_NAMES = { web: "Web", app: "App", store: "Store" };
const RISK_LABELS = { low: "Low", medium: "Medium", high: "High", unknown: "Not enough history" };

// ------------------------------------------------------------------ customer

async function identify(customerId) {
  state.customerId = customerId || null;
  state.profile = null;
  const card = $("customer-card");
  if (!customerId) {
    card.replaceChildren(h("p", { class: "anon" }, "Anonymous shopper — suggestions use the basket only."));
    renderOffer(null);
    scheduleCrossSell();
    announce("Serving an anonymous shopper.");
    return;
  }
  card.replaceChildren(h("p", { class: "muted" }, `Looking up ${customerId}…`));
  try {
    state.profile = await api(`/v1/customers/${encodeURIComponent(customerId)}`);
    renderCustomer(state.profile);
    announce(`Customer ${customerId} identified.`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      card.replaceChildren(h("p", { class: "anon" }, `No history for “${customerId}” yet — a new customer.`));
      announce(`No profile for ${customerId}; serving as a new customer.`);
    } else {
      card.replaceChildren(h("p", { class: "error" }, `Could not load the customer: ${error.message}`));
      announce(`Could not load the customer: ${error.message}`, "error");
    }
  }
  scheduleCrossSell();
  loadOffer();
}

function preferredChannel(mix) {
  const entries = Object.entries(mix || {});
  if (!entries.length) return null;
  return entries.reduce((best, entry) => (entry[1] > best[1] ? entry : best));
}

function renderCustomer(profile) {
  const value = profile.value || {};
  const churn = value.churn || {};
  const level = churn.risk || "unknown"; // the engine's rule (rules.churn_risk): lapsing is high
  const channel = preferredChannel(profile.channel_mix);
  const rfm = profile.rfm || {};
  const recent = [
    ...(profile.basket || []).map((item) => `${item.name || item.sku} (in online basket)`),
    ...(profile.recent_views || []).slice(0, 4).map((view) => `viewed ${view.name || view.sku}`),
  ];
  const fact = (label, ...content) => h("div", { class: "fact" }, h("dt", {}, label), h("dd", {}, ...content));

  $("customer-card").replaceChildren(
    h("div", { class: "card-head" },
      h("h3", {}, profile.customer_id),
      h("span", { class: `tier tier-${value.tier || "none"}` }, value.tier ? `${value.tier} tier` : "no tier yet"),
      value.segment ? h("span", { class: "chip" }, value.segment) : null),
    h("div", { class: `risk risk-${level}`, id: "churn-risk" },
      h("span", { class: "dot", "aria-hidden": "true" }),
      h("span", {}, h("strong", {}, `Churn risk: ${RISK_LABELS[level]}`),
        churn.score !== null && churn.score !== undefined ? ` (${percent(churn.score)})` : "",
        churn.reasons && churn.reasons.length ? h("span", { class: "reason" }, ` — ${churn.reasons[0]}`) : "")),
    h("dl", { class: "facts" },
      fact("Preferred channel", channel ? `${CHANNEL_NAMES[channel[0]] || channel[0]} (${percent(channel[1])})` : "—"),
      fact("Orders", `${rfm.frequency ?? 0}`,
        rfm.recency_days !== null && rfm.recency_days !== undefined
          ? h("span", { class: "muted" }, ` · last purchase ${formatDays(rfm.recency_days)}`) : ""),
      fact("Average order", money(rfm.avg_order_value)),
      fact("Returns", percent(profile.return_rate),
        profile.return_rate >= 0.3 ? h("span", { class: "warn" }, " · returns a lot") : ""),
      fact("Top categories",
        (profile.top_categories || []).length
          ? h("ul", { class: "inline-list" },
            profile.top_categories.map((c) => h("li", {}, `${c.label || c.category} ${percent(c.share)}`)))
          : "—"),
      fact("Recently", recent.length ? h("ul", { class: "inline-list" }, recent.map((r) => h("li", {}, r))) : "—"),
      profile.last_store ? fact("Last store", profile.last_store) : null),
  );
}

function formatDays(days) {
  if (days < 1) return "today";
  if (days < 2) return "yesterday";
  return `${Math.round(days)} days ago`;
}

// ------------------------------------------------------------------ search and basket

const runSearch = debounce(async (query) => {
  state.searchAbort?.abort();
  const list = $("search-results");
  if (!query) {
    state.searchResults = [];
    list.replaceChildren();
    return;
  }
  const controller = new AbortController();
  state.searchAbort = controller;
  try {
    // With a customer identified, their own line, category and brand come first.
    const who = state.customerId ? `&customer_id=${encodeURIComponent(state.customerId)}` : "";
    const { items } = await api(`/v1/catalog/search?q=${encodeURIComponent(query)}&limit=8${who}`,
      { signal: controller.signal });
    state.searchResults = items;
    list.replaceChildren(...(items.length ? items.map(resultRow)
      : [h("li", { class: "muted" }, `Nothing matches “${query}”.`)]));
  } catch (error) {
    if (error.name !== "AbortError") list.replaceChildren(h("li", { class: "error" }, error.message));
  }
}, 200);

function resultRow(product) {
  return h("li", { class: "result" },
    h("span", { class: "name" }, product.name, " ", h("span", { class: "sku" }, product.sku)),
    h("span", { class: "price" }, money(product.price)),
    product.in_stock === false ? h("span", { class: "chip warn" }, "out of stock") : null,
    h("button", { type: "button", "aria-label": `Add ${product.name} to the basket`,
      onclick: () => addToBasket(product) }, "Add"));
}

function addToBasket(product) {
  const line = state.basket.get(product.sku);
  if (line) line.qty += 1;
  else state.basket.set(product.sku, { sku: product.sku, name: product.name || product.sku, price: product.price, qty: 1 });
  renderBasket();
  announce(`${product.name || product.sku} added to the basket.`);
  scheduleCrossSell();
}

function removeFromBasket(sku) {
  const line = state.basket.get(sku);
  state.basket.delete(sku);
  renderBasket();
  announce(`${line?.name || sku} removed from the basket.`);
  scheduleCrossSell();
  $("search").focus();
}

function renderBasket() {
  const lines = [...state.basket.values()];
  $("basket").replaceChildren(...(lines.length ? lines.map((line) =>
    h("li", { class: "basket-line", dataset: { sku: line.sku } },
      h("span", { class: "name" }, line.name, " ", h("span", { class: "sku" }, line.sku)),
      h("span", { class: "qty" }, `× ${line.qty}`),
      h("span", { class: "price" }, money((line.price || 0) * line.qty)),
      h("button", { type: "button", class: "secondary", "aria-label": `Remove ${line.name} from the basket`,
        onclick: () => removeFromBasket(line.sku) }, "Remove")))
    : [h("li", { class: "muted" }, "The basket is empty.")]));
  $("basket-count").textContent = String(lines.reduce((n, line) => n + line.qty, 0));
  $("basket-total").textContent = money(lines.reduce((sum, line) => sum + (line.price || 0) * line.qty, 0));
}

// ------------------------------------------------------------------ cross-sell

const scheduleCrossSell = debounce(loadCrossSell, 150);

async function loadCrossSell() {
  state.crossAbort?.abort(); // a newer basket wins; the stale answer is dropped
  const box = $("cross-sell");
  const basket = [...state.basket.keys()];
  if (!basket.length) {
    box.replaceChildren(h("p", { class: "muted" }, "Add something to the basket to see suggestions."));
    return;
  }
  const controller = new AbortController();
  state.crossAbort = controller;
  box.setAttribute("aria-busy", "true");
  try {
    const body = { basket, k: 5 };
    if (state.customerId) body.customer_id = state.customerId;
    const { items } = await api("/v1/cross-sell", { method: "POST", body, signal: controller.signal });
    const fresh = items.filter((item) => !state.basket.has(item.sku));
    box.replaceChildren(fresh.length
      ? h("ul", { class: "suggestions" }, fresh.map(suggestionRow))
      : h("p", { class: "muted" }, "No suggestions for this basket yet."));
  } catch (error) {
    if (error.name === "AbortError") return;
    box.replaceChildren(h("p", { class: "error" }, `Suggestions unavailable: ${error.message}`));
  } finally {
    if (state.crossAbort === controller) box.setAttribute("aria-busy", "false");
  }
}

function suggestionRow(item) {
  return h("li", { class: "suggestion", dataset: { sku: item.sku } },
    h("div", { class: "suggestion-head" },
      h("span", { class: "name" }, item.name || item.sku, " ", h("span", { class: "sku" }, item.sku)),
      h("span", { class: "price" }, money(item.price)),
      h("button", { type: "button", "aria-label": `Add ${item.name || item.sku} to the basket`,
        onclick: () => addToBasket(item) }, "Add")),
    item.reasons?.length ? h("ul", { class: "reasons" }, item.reasons.map((r) => h("li", {}, r))) : null);
}

// ------------------------------------------------------------------ next best offer

async function loadOffer() {
  state.offerAbort?.abort();
  const box = $("offer");
  if (!state.customerId) {
    renderOffer(null);
    return;
  }
  const controller = new AbortController();
  state.offerAbort = controller;
  box.replaceChildren(h("p", { class: "muted" }, "Finding the best offer…"));
  try {
    const decision = await api(
      `/v1/customers/${encodeURIComponent(state.customerId)}/next-best-offer?channel=store&context=checkout`,
      { signal: controller.signal });
    renderOffer(decision);
    if (decision.decision_id) {
      await sendFeedback(decision.decision_id, "impression");
    }
  } catch (error) {
    if (error.name !== "AbortError") box.replaceChildren(h("p", { class: "error" }, `No offer: ${error.message}`));
  }
}

function sendFeedback(decisionId, event) {
  return api("/v1/feedback", { method: "POST", body: { decision_id: decisionId, event } });
}

function renderOffer(decision) {
  const box = $("offer");
  if (!decision) {
    box.replaceChildren(h("p", { class: "muted" }, "Identify the customer to see their offer."));
    return;
  }
  if (!decision.offer) {
    box.replaceChildren(h("p", { class: "muted" }, "No offer for this customer right now."),
      decision.reasons?.length ? h("ul", { class: "reasons" }, decision.reasons.map((r) => h("li", {}, r))) : null);
    return;
  }
  const offer = decision.offer;
  const confirmation = h("p", { class: "confirmation", id: "offer-confirmation", role: "status" });
  const accept = h("button", { type: "button", class: "accept" }, "Accept");
  const decline = h("button", { type: "button", class: "secondary" }, "Decline");
  const decide = async (event, button) => {
    accept.disabled = decline.disabled = true;
    try {
      await sendFeedback(decision.decision_id, event);
      confirmation.textContent = event === "accept"
        ? `Accepted: ${offer.name}. Apply it at the till.` : `Declined: ${offer.name}. Noted.`;
      confirmation.dataset.kind = event;
      announce(confirmation.textContent);
    } catch (error) {
      accept.disabled = decline.disabled = false;
      confirmation.textContent = `Could not record that: ${error.message}. Try again.`;
      confirmation.dataset.kind = "error";
      button.focus();
    }
  };
  accept.addEventListener("click", () => decide("accept", accept));
  decline.addEventListener("click", () => decide("dismiss", decline));
  box.replaceChildren(h("article", { class: "offer-card" },
    h("h3", {}, offer.name),
    h("p", { class: "offer-kind" }, `${offer.kind.replaceAll("_", " ")} · worth ${money(offer.value)}`,
      offer.valid_days ? ` · valid ${offer.valid_days} days` : ""),
    offer.bundle_skus?.length ? h("p", { class: "muted" }, `With: ${offer.bundle_skus.join(", ")}`) : null,
    decision.reasons?.length ? h("ul", { class: "reasons" }, decision.reasons.map((r) => h("li", {}, r))) : null,
    h("div", { class: "actions" }, accept, decline),
    confirmation));
}

// ------------------------------------------------------------------ wiring

function start() {
  $("identify-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("customer-id").value.trim();
    identify(id || null);
  });
  $("anonymous").addEventListener("click", () => {
    $("customer-id").value = "";
    identify(null);
  });
  const search = $("search");
  search.addEventListener("input", () => runSearch(search.value.trim()));
  search.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      if (state.searchResults.length) addToBasket(state.searchResults[0]);
    } else if (event.key === "Escape") {
      search.value = "";
      runSearch("");
    }
  });
  renderBasket();
}

start();
setupKeyForm(() => $("customer-id").focus());
