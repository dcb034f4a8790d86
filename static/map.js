// The live map: every client's newest location from the gateway's WebSocket, places near a
// selected client, and the herd's health. Text from clients, servers and places only ever
// reaches the page as text nodes (textContent, createTextNode), never as HTML.
"use strict";

(() => {
  const config = JSON.parse(document.getElementById("config").textContent);

  // Opening /?token=... makes the gateway set an HttpOnly cookie that authorises this page's
  // own requests; keep the token itself out of the address bar and the history.
  const params = new URLSearchParams(location.search);
  if (params.has("token")) {
    params.delete("token");
    const query = params.toString();
    history.replaceState(null, "", location.pathname + (query ? `?${query}` : "") + location.hash);
  }

  const TRAIL_POINTS = 20; // positions kept per client trail
  const HERD_POLL_MS = 2000;
  const BACKOFF_MIN_MS = 250; // first reconnect attempt; doubles up to the max
  const BACKOFF_MAX_MS = 10000;
  const STALE_S = 300; // list entries older than this are dimmed
  const FALLBACK_ICON = "/static/icons/locality.svg";
  // The herd's latest client time (end of 9999): the gateway sends null for a later one, and
  // a browser's Date holds no time much past it.
  const MAX_TIME_S = 253402300799;

  const $ = (id) => document.getElementById(id);
  let socket = null;
  let backoff = BACKOFF_MIN_MS;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // -- map and basemap ------------------------------------------------------------------

  const map = L.map("map", {
    minZoom: 2,
    worldCopyJump: true,
    // No dragging off the top or bottom of the Web Mercator world.
    maxBounds: [
      [-85.06, -540],
      [85.06, 540],
    ],
    maxBoundsViscosity: 1,
  }).setView([25, 0], 2);
  // Countries sit under any tile layer, which in turn sits under trails and markers.
  map.createPane("basemap").style.zIndex = 150;

  fetch("/static/vendor/world-atlas/countries-110m.json")
    .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`HTTP ${r.status}`))))
    .then((topo) => {
      const countries = topojson.feature(topo, topo.objects.countries);
      for (const { geometry } of countries.features) {
        const { type, coordinates } = geometry;
        const polygons = type === "Polygon" ? [coordinates] : coordinates;
        for (const polygon of polygons) polygon.forEach((ring, i) => (polygon[i] = unwrap(ring)));
      }
      L.geoJSON(countries, {
        pane: "basemap",
        renderer: L.svg({ pane: "basemap" }),
        interactive: false,
        attribution: "Natural Earth",
        style: { className: "land", weight: 0.6 },
      }).addTo(map);
    })
    .catch((err) => console.warn("basemap not loaded:", err));

  // world-atlas keeps rings that cross the antimeridian whole (d3 draws them on the sphere);
  // on Leaflet's flat map they would streak across the world.
  function unwrap(ring) {
    const jumps = [];
    for (let i = 1; i < ring.length; i++) {
      if (Math.abs(ring[i][0] - ring[i - 1][0]) > 180) jumps.push(i);
    }
    if (jumps.length === 1) {
      // Around a pole (Antarctica): close the ring along the pole instead.
      const i = jumps[0];
      const pole = ring[i][1] < 0 ? -90 : 90;
      ring.splice(i, 0, [ring[i - 1][0], pole], [ring[i][0], pole]);
    } else if (jumps.length) {
      // Across it (Russia, Fiji: mostly east of it): continue the western part past 180°.
      return ring.map(([lon, lat]) => [lon < 0 ? lon + 360 : lon, lat]);
    }
    return ring;
  }

  if (config.tile_url) {
    const tiles = L.tileLayer(config.tile_url, {
      maxZoom: 19,
      referrerPolicy: "no-referrer",
      // Leaflet renders attributions as HTML; the configured one is shown as plain text.
      attribution: escapeHtml(config.tile_attribution),
    });
    L.control.layers(null, { "Online map tiles": tiles }, { position: "topright" }).addTo(map);
  }

  function escapeHtml(text) {
    const node = el("span", "", text);
    return node.innerHTML; // serialising a text node escapes &, < and >
  }

  // The view follows the clients until the user moves the map or selects one.
  let followAll = true;
  for (const type of ["pointerdown", "wheel", "keydown"]) {
    map.getContainer().addEventListener(type, () => (followAll = false), { passive: true });
  }

  // -- clients ---------------------------------------------------------------------------

  const clients = new Map(); // client_id -> {record, marker, trail, points, li, server, age}
  const clientLayer = L.layerGroup().addTo(map);
  const clientIcon = L.icon({
    iconUrl: "/static/icons/client.svg",
    iconSize: [28, 28],
    iconAnchor: [14, 26],
    tooltipAnchor: [0, -24],
    className: "client-marker",
  });

  // One record from the gateway, shown; a record that cannot be (no position, a time no Date
  // can hold, a missing field) is skipped with a warning, never taking the others with it.
  function show(record) {
    try {
      upsert(record);
    } catch (err) {
      console.warn("record not shown:", err, record);
    }
  }

  const finite = (value) => typeof value === "number" && Number.isFinite(value);

  function upsert(record) {
    if (!record || typeof record.client_id !== "string") throw new Error("no client ID");
    if (!(finite(record.lat) && Math.abs(record.lat) <= 90)) throw new Error("no latitude");
    if (!(finite(record.lon) && Math.abs(record.lon) <= 180)) throw new Error("no longitude");
    const id = record.client_id;
    let client = clients.get(id);
    if (client && client.record.at === record.at) return; // a snapshot repeating what we have
    const latlng = [record.lat, record.lon];
    if (!client) {
      client = addClient(record, latlng);
    } else {
      client.marker.setLatLng(latlng);
    }
    client.record = record;
    client.points.push(latlng);
    if (client.points.length > TRAIL_POINTS) client.points.shift();
    client.trail.setLatLngs(client.points);
    client.server.textContent = `via ${record.server}`;
    const attributes = record.attributes || {};
    client.display.textContent = typeof attributes.name === "string" ? attributes.name : "";
    client.details.textContent = summary(attributes);
    client.li.classList.toggle("alarm", Boolean(attributes.alarm));
    client.marker.setTooltipContent(tooltipText(record));
    refreshAge(client, Date.now() / 1000);
  }

  function addClient(record, latlng) {
    const id = record.client_id;
    const trail = L.polyline([], { className: "trail", interactive: false }).addTo(clientLayer);
    const marker = L.marker(latlng, { icon: clientIcon, alt: id, riseOnHover: true });
    // Leaflet makes a new element each time the marker is added; label every one of them.
    marker.on("add", () => (marker.getElement().dataset.clientId = id));
    marker.bindTooltip(tooltipText(record), { direction: "top" });
    marker.on("click", () => select(id));
    marker.addTo(clientLayer);

    const li = el("li");
    li.dataset.clientId = id;
    const button = el("button", "client");
    button.type = "button";
    button.setAttribute("aria-pressed", "false");
    const server = el("span", "server");
    const age = el("span", "age");
    // The device's name as the phone sent it, and what else it said (battery, accuracy, ...).
    const display = el("span", "display");
    const details = el("span", "details");
    button.append(el("span", "name", id), display, server, age, details);
    button.addEventListener("click", () => select(id));
    li.append(button);
    insertSorted($("clients"), li, id);

    const client = { record, marker, trail, points: [], li, server, age, display, details };
    clients.set(id, client);
    $("client-count").textContent = String(clients.size);
    $("clients-empty").hidden = true;
    if (followAll) fitClients();
    return client;
  }

  function tooltipText(record) {
    const attributes = record.attributes || {};
    const name = typeof attributes.name === "string" ? ` (${attributes.name})` : "";
    const said = summary(attributes);
    const text = `${record.client_id}${name} · ${record.server}${said ? ` · ${said}` : ""}`;
    return document.createTextNode(text);
  }

  // A point's attributes in a few words: "battery 87% · ±5 m · 3.2 m/s · ALARM sos".
  function summary(attributes) {
    const parts = [];
    const number = (key, format) => {
      if (finite(attributes[key])) parts.push(format(attributes[key]));
    };
    number("battery", (v) => `battery ${Math.round(v)}%${attributes.charging ? " charging" : ""}`);
    number("accuracy", (v) => `±${Math.round(v)} m`);
    number("speed", (v) => `${v.toFixed(1)} m/s`);
    number("altitude", (v) => `${Math.round(v)} m up`);
    const transition = attributes.transition;
    if (transition && typeof transition === "object") {
      const verb = transition.event === "leave" ? "left" : "entered";
      parts.push(`${verb} ${String(transition.region ?? "a region")}`);
    }
    if (attributes.alarm) parts.push(`ALARM ${String(attributes.alarm)}`);
    else if (attributes.event) parts.push(String(attributes.event));
    if (attributes.heartbeat) parts.push("no fix");
    return parts.join(" · ");
  }

  function insertSorted(list, li, id) {
    const next = [...list.children].find((other) => other.dataset.clientId > id);
    list.insertBefore(li, next || null);
  }

  function fitClients() {
    const bounds = L.latLngBounds([...clients.values()].map((c) => c.marker.getLatLng()));
    if (bounds.isValid()) map.fitBounds(bounds, { padding: [40, 40], maxZoom: 11 });
  }

  function refreshAge(client, now) {
    const time = client.record.time; // null when the gateway cannot show it
    const known = finite(time) && time >= 0 && time <= MAX_TIME_S;
    const seconds = known ? Math.max(0, now - time) : NaN;
    client.age.textContent = formatAge(seconds);
    client.age.title = known ? formatDate(time) : "";
    client.li.classList.toggle("stale", !(seconds <= STALE_S));
  }

  // ISO 8601 for a POSIX time, or "" for one no Date holds (past ±8.64e12 s, or not a number).
  function formatDate(time) {
    const date = new Date(finite(time) ? time * 1000 : NaN);
    return Number.isNaN(date.getTime()) ? "" : date.toISOString();
  }

  function formatAge(seconds) {
    if (!Number.isFinite(seconds)) return "time unknown";
    if (seconds < 60) return `${Math.floor(seconds)} s ago`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
    return `${Math.floor(seconds / 86400)} d ago`;
  }

  setInterval(() => {
    const now = Date.now() / 1000;
    for (const client of clients.values()) {
      try {
        refreshAge(client, now);
      } catch (err) {
        console.warn("age not shown:", err);
      }
    }
  }, 1000);

  // -- selection and nearby places ------------------------------------------------------

  const placeLayer = L.layerGroup().addTo(map);
  let selected = null;
  let nextCommand = 1;
  let nearbyCommand = null; // the id of the one nearby reply we still want
  let nearbyRadius = null;

  function select(id) {
    if (selected && clients.has(selected)) mark(clients.get(selected), false);
    selected = id;
    followAll = false;
    const client = clients.get(id);
    if (client) {
      mark(client, true);
      map.setView(client.marker.getLatLng(), Math.max(map.getZoom(), 11));
    }
    askNearby();
  }

  function mark(client, on) {
    client.li.classList.toggle("selected", on);
    client.li.querySelector("button").setAttribute("aria-pressed", String(on));
    client.marker.getElement()?.classList.toggle("selected", on);
    client.marker.setZIndexOffset(on ? 1000 : 0);
    client.trail.getElement()?.classList.toggle("selected", on);
  }

  function askNearby() {
    placeLayer.clearLayers();
    $("places").replaceChildren();
    if (!selected) return;
    const radius = Number($("radius").value);
    const limit = Number($("limit").value);
    if (!(radius > 0 && radius <= 50)) {
      return placesStatus("The radius must be more than 0 and at most 50 km.", true);
    }
    if (!(Number.isInteger(limit) && limit >= 1 && limit <= 20)) {
      return placesStatus("The limit must be a whole number from 1 to 20.", true);
    }
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      return placesStatus("Not connected; asking again once live.", false);
    }
    nearbyCommand = nextCommand++;
    nearbyRadius = radius;
    const command = { type: "nearby", id: nearbyCommand, client_id: selected };
    socket.send(JSON.stringify({ ...command, radius_km: radius, limit }));
    placesStatus(`Looking for places within ${radius} km of ${selected}…`, false);
  }

  function placesStatus(text, isError) {
    const status = $("places-status");
    status.textContent = text;
    status.classList.toggle("error", isError);
  }

  function showPlaces(reply) {
    const record = reply.record;
    const listed = reply.places && reply.places.results;
    const results = (Array.isArray(listed) ? listed : []).filter((p) => p && typeof p === "object");
    const from = L.latLng(record.lat, record.lon);
    const found = ["No places", "1 place"][results.length] || `${results.length} places`;
    placesStatus(`${found} within ${reply.radius} km of ${record.client_id}`, false);
    const bounds = L.latLngBounds([from]);
    const items = results.map((place) => {
      const loc = place && place.geometry && place.geometry.location;
      const latlng = loc && finite(loc.lat) && finite(loc.lng) ? L.latLng(loc.lat, loc.lng) : null;
      const li = el("li", "place");
      const head = el("div", "head");
      head.append(el("span", "name", String(place.name ?? "(unnamed)")));
      if (latlng) head.append(el("span", "distance", formatKm(from.distanceTo(latlng))));
      li.append(head);
      if (Array.isArray(place.types)) li.append(el("div", "types", place.types.join(", ")));
      if (place.vicinity) li.append(el("div", "vicinity", String(place.vicinity)));
      if (latlng) {
        const marker = L.marker(latlng, {
          icon: L.icon({
            iconUrl: localIcon(place.icon),
            iconSize: [22, 22],
            className: "place-marker",
          }),
          alt: String(place.name ?? ""),
          keyboard: false,
        });
        marker.bindTooltip(document.createTextNode(String(place.name ?? "")));
        marker.addTo(placeLayer);
        bounds.extend(latlng);
        const show = () => {
          map.panTo(latlng);
          marker.openTooltip();
        };
        li.tabIndex = 0;
        li.addEventListener("click", show);
        li.addEventListener("keydown", (event) => event.key === "Enter" && show());
      }
      return li;
    });
    $("places").replaceChildren(...items);
    if (results.length) map.fitBounds(bounds, { padding: [40, 40], maxZoom: 13 });
  }

  // Only icons from this origin: the page loads nothing from anywhere else.
  function localIcon(url) {
    try {
      const parsed = new URL(String(url), location.href);
      if (parsed.origin === location.origin) return parsed.pathname;
    } catch (_) {
      // not a URL: use the fallback
    }
    return FALLBACK_ICON;
  }

  function formatKm(meters) {
    return meters < 10000 ? `${(meters / 1000).toFixed(1)} km` : `${Math.round(meters / 1000)} km`;
  }

  $("nearby-form").addEventListener("submit", (event) => {
    event.preventDefault();
    askNearby();
  });
  for (const id of ["radius", "limit"]) $(id).addEventListener("change", askNearby);

  // -- the WebSocket ---------------------------------------------------------------------

  function connect() {
    const url = new URL("/api/v1/ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(url);
    socket.addEventListener("message", (event) => {
      try {
        handle(JSON.parse(event.data));
      } catch (err) {
        console.warn("message not handled:", err);
      }
    });
    socket.addEventListener("close", () => {
      setConnection("reconnecting");
      // Jitter so that many pages do not all come back in the same instant.
      setTimeout(connect, backoff * (0.5 + Math.random() / 2));
      backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    });
  }

  function handle(message) {
    switch (message.type) {
      case "snapshot":
        backoff = BACKOFF_MIN_MS;
        setConnection("live");
        for (const record of message.records) show(record);
        if (selected) askNearby();
        break;
      case "update":
        show(message.record);
        break;
      case "event": // an alarm or a region transition: the update shows it in the list
        if (message.event && message.event.point) show(message.event.point);
        break;
      case "reply":
        if (message.id === nearbyCommand) showPlaces({ ...message, radius: nearbyRadius });
        break;
      case "error":
        if (message.id === nearbyCommand || message.id === null) {
          const { status, message: text } = message.error;
          placesStatus(`Error ${status}: ${text}`, true);
        }
        break;
    }
  }

  function setConnection(state) {
    const node = $("connection");
    node.textContent = state;
    node.className = state;
  }

  // -- the herd panel --------------------------------------------------------------------

  async function pollHerd() {
    try {
      const response = await fetch("/api/v1/herd", { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      showHerd(await response.json());
    } catch (err) {
      $("herd-status").textContent = `Herd status unavailable (${err.message}).`;
      $("herd-status").classList.add("error");
      $("herd").classList.add("stale"); // the last answer stays, dimmed
    } finally {
      setTimeout(pollHerd, HERD_POLL_MS);
    }
  }

  function showHerd(herd) {
    const up = herd.servers.filter((s) => s.up).length;
    $("herd-status").textContent = `${up} of ${herd.servers.length} servers up`;
    $("herd-status").classList.toggle("error", up < herd.servers.length);
    $("herd").classList.remove("stale");
    const items = herd.servers.map((server) => {
      const li = el("li", server.up ? "up" : "down");
      li.dataset.server = server.name;
      const head = el("div", "head");
      head.append(el("span", "dot"), el("span", "name", server.name));
      if (server.name === herd.subscribed_to) {
        li.classList.add("subscribed");
        head.append(el("span", "badge", "live feed"));
      }
      const records = server.records === null ? "" : ` · ${server.records} records`;
      head.append(el("span", "state", (server.up ? "up" : "down") + records));
      li.append(head);
      // Every configured link, with the state this server reports for it.
      const links = el("div", "links");
      for (const [a, b] of herd.links) {
        if (a !== server.name && b !== server.name) continue;
        const peer = a === server.name ? b : a;
        const reported = server.links[peer];
        const state = reported === "up" || reported === "down" ? reported : "unknown";
        const link = el("span", `link ${state}`, peer);
        link.title = `link to ${peer}: ${state}`;
        links.append(link);
      }
      li.append(links);
      return li;
    });
    $("herd").replaceChildren(...items);
  }

  connect();
  pollHerd();
})();
