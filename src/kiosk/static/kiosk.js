// lookd's kiosk page: subscribes to lookd's topics over MQTT-over-WebSocket (MQTT.js, served by
// lookd) and shows the current category's top products as photos. No build step, no network
// beyond the mirror. Settings come from /kiosk.json; a password from the URL's #token=... (kept
// for this tab only, and taken out of the address bar) or from the form.
"use strict";

(async function main() {
  const $ = (id) => document.getElementById(id);
  const state = {
    slug: null, available: {}, recs: {}, catalog: null, online: false, connected: false, shown: null, connects: 0,
  };
  // For tests and for whoever debugs a mirror from the browser's console.
  window.lookdKiosk = state;

  const settings = await (await fetch("/kiosk.json", { cache: "no-store" })).json();
  const p = settings.prefix;
  $("device").textContent = settings.device;
  // The shoppers' notice that a camera is in use ([privacy] notice; none when it is empty).
  $("notice").textContent = settings.notice || "";
  $("notice").hidden = !settings.notice;

  function setState(name, text) {
    document.body.dataset.state = name;
    $("status").textContent = text;
  }

  function label(path) {
    const parts = path.split("|");
    return parts[parts.length - 1];
  }

  // The buttons are made again only when the categories change; otherwise only which one is
  // pressed changes, so a button is never swapped under a finger.
  let madeFor = null;
  function renderCategories() {
    const nav = $("categories");
    const key = JSON.stringify(state.available);
    if (key === madeFor) {
      for (const b of nav.children) b.setAttribute("aria-pressed", String(b.dataset.slug === state.slug));
      return;
    }
    madeFor = key;
    nav.replaceChildren();
    for (const [slug, path] of Object.entries(state.available)) {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.slug = slug;
      b.textContent = label(path);
      b.setAttribute("aria-pressed", String(slug === state.slug));
      b.addEventListener("click", () => {
        if (client) client.publish(`${p}/category/set`, slug, { qos: 1 });
      });
      nav.append(b);
    }
  }

  function titleOf(item) {
    const f = item.fields || {};
    return f.title || f.name || f.label || item.id;
  }

  function priceOf(item) {
    const f = item.fields || {};
    if (!f.price) return "";
    return f.currency ? `${f.price} ${f.currency}` : f.price;
  }

  function renderGrid() {
    const rec = state.slug ? state.recs[state.slug] : null;
    const grid = $("grid");
    if (!rec) {
      grid.replaceChildren();
      state.shown = null;
      return;
    }
    const items = rec.items.slice(0, settings.top);
    const cards = items.map((item) => {
      const li = document.createElement("li");
      li.dataset.id = item.id;
      li.dataset.rank = String(item.rank);
      const img = document.createElement("img");
      img.src = `/images/${encodeURIComponent(item.id)}`;
      img.alt = titleOf(item);
      img.decoding = "async";
      const caption = document.createElement("div");
      caption.className = "caption";
      const rank = document.createElement("span");
      rank.className = "rank";
      rank.textContent = String(item.rank);
      const title = document.createElement("span");
      title.className = "title";
      title.textContent = titleOf(item);
      const price = document.createElement("span");
      price.className = "price";
      price.textContent = priceOf(item);
      caption.append(rank, title, price);
      li.append(img, caption);
      return li;
    });
    grid.replaceChildren(...cards);
    state.shown = { slug: state.slug, frame: rec.frame, ids: items.map((i) => i.id) };
  }

  function tick() {
    const rec = state.slug ? state.recs[state.slug] : null;
    if (!rec) {
      $("age").textContent = "";
      return;
    }
    const age = Math.max(0, Math.round(Date.now() / 1000 - rec.ts));
    $("age").textContent = age < 2 ? "updated just now" : `updated ${age} s ago`;
  }
  setInterval(tick, 1000);

  // While a catalog is being made with nothing to show yet (a first start), the empty screen
  // says how far it is instead of inviting a shopper to step in.
  function showCatalog() {
    const c = state.catalog;
    const prog = c && c.state === "building" && c.progress;
    document.body.dataset.catalog = prog ? "building" : "ready";
    if (!prog) {
      $("empty").textContent = "Step in front of the mirror.";
      return;
    }
    const left = prog.eta_s == null ? "" : `, about ${Math.max(1, Math.round(prog.eta_s))} s left`;
    $("empty").textContent = `Preparing the catalog: ${prog.done} of ${prog.total} products${left}.`;
  }

  function showStatus() {
    if (!state.connected) setState("offline", "offline: no broker");
    else if (!state.online) setState("offline", "offline");
    else setState("online", "online");
  }

  function onMessage(topic, payload) {
    const text = new TextDecoder().decode(payload);
    if (topic === `${p}/status`) {
      state.online = text === "online";
      showStatus();
      return;
    }
    if (topic.startsWith(`${p}/recommendations/`) && text === "") {
      // lookd forgot the scene ([privacy] forget-after-s): the ranking is gone, not stale.
      delete state.recs[topic.slice(`${p}/recommendations/`.length)];
      renderGrid();
      tick();
      return;
    }
    let body;
    try {
      body = JSON.parse(text);
    } catch (e) {
      console.warn(`lookd kiosk: ${topic} is not JSON`);
      return;
    }
    if (topic === `${p}/catalog/state`) {
      state.catalog = body;
      showCatalog();
    } else if (topic === `${p}/category/state`) {
      state.slug = body.slug;
      state.available = body.available || {};
      renderCategories();
      renderGrid();
      tick();
    } else if (topic.startsWith(`${p}/recommendations/`)) {
      const slug = topic.slice(`${p}/recommendations/`.length);
      state.recs[slug] = body;
      if (slug === state.slug) {
        renderGrid();
        tick();
      }
    }
  }

  let client = null;
  let everConnected = false;
  function connect(password) {
    const url = settings.ws_url || `ws://${location.hostname}:${settings.ws_port}/`;
    const options = {
      clientId: `lookd-kiosk-${Math.random().toString(16).slice(2, 10)}`,
      clean: true,
      keepalive: 10,
      reconnectPeriod: 1000,
      connectTimeout: 5000,
      protocolVersion: 4,
      // MQTT.js would keep its ping timer in a Worker made from a blob: URL, which the page's
      // Content-Security-Policy refuses; a kiosk's page is never a background tab, so plain
      // timers keep time.
      timerVariant: "native",
    };
    if (settings.login) {
      options.username = settings.username;
      options.password = password;
    }
    client = mqtt.connect(url, options);
    client.on("connect", () => {
      everConnected = true;
      state.connected = true;
      state.connects += 1;
      $("login").hidden = true;
      client.subscribe([`${p}/status`, `${p}/category/state`, `${p}/catalog/state`, `${p}/recommendations/+`], {
        qos: 1,
      });
      showStatus();
    });
    client.on("close", () => {
      state.connected = false;
      showStatus();
      if (settings.login && !everConnected) {
        $("login").hidden = false;
        $("login-error").textContent = "Not connected: the password was refused, or lookd is away.";
      }
    });
    client.on("error", (e) => console.warn(`lookd kiosk: ${e.message}`));
    client.on("message", onMessage);
  }

  function passwordFromUrl() {
    const m = location.hash.match(/(?:^#|&)token=([^&]*)/);
    if (!m) return null;
    const token = decodeURIComponent(m[1]);
    sessionStorage.setItem("lookd-token", token);
    history.replaceState(null, "", location.pathname + location.search);
    return token;
  }

  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    const typed = $("password").value;
    sessionStorage.setItem("lookd-token", typed);
    $("login-error").textContent = "";
    if (client) client.end(true);
    connect(typed);
  });
  const password = settings.login ? passwordFromUrl() || sessionStorage.getItem("lookd-token") : null;
  if (settings.login && !password) {
    setState("login", "password needed");
    $("login").hidden = false;
    return;
  }
  connect(password);
})();
