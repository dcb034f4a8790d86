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

  const HERD_POLL_MS = 2000;
  const BACKOFF_MIN_MS = 250; // first reconnect attempt; doubles up to the max
  const BACKOFF_MAX_MS = 10000;
  const STALE_S = 300; // list entries older than this are dimmed
  const ROW_PX = 46; // the height of a client list row (map.css: #clients > li)
  const OVERSCAN = 10; // rows kept in the page above and below the visible ones
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
    maxZoom: 19, // the clusters need one; the tiles' deepest

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

  // -- clients on the map ----------------------------------------------------------------
  //
  // Pins and trails are drawn on canvases (one element each, however many clients), trails
  // under pins. Pins that would overlap are gathered into clusters (DOM icons, a few hundred
  // at most on a screen); a trail is drawn only while its client's own pin is. The selected
  // client's pin leaves the clusters so that it always stands out.

  map.createPane("trails").style.zIndex = 390;
  map.createPane("clients").style.zIndex = 450;
  const trailRenderer = L.canvas({ pane: "trails" });
  const pinRenderer = L.canvas({ pane: "clients", tolerance: 3 });

  const PIN = { radius: 8, color: "#fff", weight: 1.5, fillColor: "#1d4f91", fillOpacity: 1 };
  const PIN_SELECTED = { ...PIN, radius: 11, color: "#1d4f91", weight: 2, fillColor: "#ffb300" };
  // One pixel wide and solid: a canvas draws a line of one pixel or less segment by segment
  // (a "hairline"), where a wider or dashed one is outlined and filled as a whole; with
  // 100,000 trail points that is 0.1 s against a second or more per redraw (tests/
  // test_map_scale.py). The selected client's trail, one line, is drawn wide.
  const TRAIL = { color: "#1d4f91", opacity: 0.7, weight: 1 };
  const TRAIL_SELECTED = { ...TRAIL, opacity: 0.9, weight: 4 };

  // A map pin on a canvas: a round head of the marker's radius, its tip at the position.
  const Pin = L.CircleMarker.extend({
    _head() {
      return this._point.subtract([0, 2 * this._radius]);
    },
    _updateBounds() {
      const r = this._radius + this._clickTolerance() + 1;
      const tip = this._point;
      this._pxBounds = L.bounds(tip.subtract([r, 3 * r]), tip.add([r, r]));
    },
    _updatePath() {
      const renderer = this._renderer;
      if (!renderer._drawing || this._empty()) return;
      const ctx = renderer._ctx;
      const tip = this._point;
      const head = this._head();
      const r = this._radius;
      const a = Math.acos(0.5); // the sides meet the head where they are tangent to it
      ctx.beginPath();
      ctx.moveTo(tip.x, tip.y);
      ctx.arc(head.x, head.y, r, Math.PI / 2 + a, Math.PI / 2 - a);
      ctx.closePath();
      renderer._fillStroke(ctx, this);
      ctx.beginPath();
      ctx.arc(head.x, head.y, r * 0.4, 0, 2 * Math.PI);
      ctx.fillStyle = "#fff";
      ctx.fill();
    },
    _containsPoint(point) {
      return point.distanceTo(this._head()) <= this._radius + this._clickTolerance();
    },
  });

  const clusters = L.markerClusterGroup({
    // Clusters only where pins would overlap: a radius of about two pins' width.
    maxClusterRadius: 30,
    // A snapshot of thousands is clustered in slices of at most this many ms, each its own
    // task, so no task of it blocks the page for long; input and frames come in between.
    chunkedLoading: true,
    chunkInterval: 60,
    chunkDelay: 0,
    chunkProgress: (done, total) => done === total && setTimeout(clustered),
    animate: false,
    showCoverageOnHover: false,
    iconCreateFunction: clusterIcon,
  }).addTo(map);
  const selectedLayer = L.featureGroup().addTo(map);
  const tooltip = L.tooltip({ direction: "top", offset: [0, -20] });

  function clusterIcon(cluster) {
    const count = cluster.getChildCount();
    // The size classes of MarkerCluster.Default.css.
    const size = count < 10 ? "small" : count < 100 ? "medium" : "large";
    const inner = el("div");
    inner.append(el("span", "", String(count)));
    return L.divIcon({
      html: inner,
      className: `marker-cluster marker-cluster-${size}`,
      iconSize: L.point(40, 40),
    });
  }

  for (const layer of [clusters, selectedLayer]) {
    layer.on("click", (event) => select(event.layer.options.clientId));
    layer.on("mouseover", (event) => {
      const client = clients.get(event.layer.options.clientId);
      if (!client) return;
      // The tooltip's text is made when it opens: nothing is kept up to date for it.
      tooltip.setLatLng(client.marker.getLatLng()).setContent(tooltipText(client.record));
      tooltip.openOn(map);
    });
    layer.on("mouseout", () => tooltip.close());
  }

  function showTrail() {
    trails.show(this.options.clientId);
  }

  function hideTrail() {
    trails.hide(this.options.clientId);
  }

  // -- records in, batched per frame -----------------------------------------------------

  const clients = new Map(); // client_id -> {id, record, marker, latlng, key, index}
  const pending = new Map(); // client_id -> its newest record not yet shown
  let frame = 0;
  let bounds = null; // of every client seen: what the view fits while it follows them

  // A record from the gateway, shown at the next frame: records for one client that arrive
  // within one frame cost one change to the page.
  function queue(record) {
    if (!record || typeof record.client_id !== "string") {
      console.warn("record not shown: no client ID", record);
      return;
    }
    pending.set(record.client_id, record);
    if (!frame) frame = requestAnimationFrame(flush);
  }

  function flush() {
    cancelAnimationFrame(frame);
    frame = 0;
    const added = [];
    let reorder = false;
    for (const record of pending.values()) {
      // A record that cannot be shown (no position, a missing field) is skipped with a
      // warning, never taking the others with it.
      try {
        const change = upsert(record);
        if (change === ADDED) added.push(clients.get(record.client_id));
        if (change !== SAME) reorder = true;
      } catch (err) {
        console.warn("record not shown:", err, record);
      }
    }
    pending.clear();
    const pick = wanted !== null && clients.has(wanted) ? wanted : null;
    if (added.length) {
      for (const client of added) bounds = (bounds || L.latLngBounds([])).extend(client.latlng);
      if (followAll && pick === null) {
        map.fitBounds(bounds, { padding: [40, 40], maxZoom: 11, animate: false });
      }
      // The client a link asks for goes straight to the selected layer, never to a cluster.
      const markers = added.filter((c) => c.id !== pick).map((client) => client.marker);
      // Clustered from the next task on (this one made the markers), in chunks; no listener
      // wants a layeradd event per marker.
      setTimeout(() => clusters.addLayers(markers, true));
      $("client-count").textContent = String(clients.size);
      $("clients-empty").hidden = true;
    }
    if (reorder) rebuildSoon();
    if (pick !== null) {
      wanted = null;
      if (reorder) rebuildOrder(); // so that its row can be shown
      select(pick);
    }
  }

  // Clustering a snapshot goes on for a few frames: a client selected meanwhile (from the
  // list) may have been clustered after its selection took it out. Put it back.
  function clustered() {
    const client = selected === null ? null : clients.get(selected);
    if (client && clusters.hasLayer(client.marker)) {
      clusters.removeLayer(client.marker);
      selectedLayer.addLayer(client.marker);
    }
  }

  const SAME = 0;
  const CHANGED = 1;
  const ADDED = 2;
  const finite = (value) => typeof value === "number" && Number.isFinite(value);

  function upsert(record) {
    if (!(finite(record.lat) && Math.abs(record.lat) <= 90)) throw new Error("no latitude");
    if (!(finite(record.lon) && Math.abs(record.lon) <= 180)) throw new Error("no longitude");
    const id = record.client_id;
    let client = clients.get(id);
    if (client && client.record.at === record.at) return SAME; // a snapshot repeating ours
    const latlng = L.latLng(record.lat, record.lon);
    const attributes = record.attributes || {};
    const name = typeof attributes.name === "string" ? attributes.name : "";
    const change = client ? CHANGED : ADDED;
    if (!client) {
      const marker = new Pin(latlng, { ...PIN, renderer: pinRenderer, clientId: id });
      marker.on({ add: showTrail, remove: hideTrail });
      client = { id, record, marker, latlng, key: "", index: -1 };
      clients.set(id, client);
    } else if (!latlng.equals(client.latlng) && !replay.active()) {
      // Moved: the clusters follow the marker's move event. (A replay places the pins
      // itself, and puts them back here when it ends.)
      client.marker.setLatLng(latlng);
    }
    client.latlng = latlng;
    client.record = record;
    client.key = `${id}\n${name}`.toLowerCase();
    trails.live(record);
    const row = rendered.get(id);
    if (row) fillRow(row, client, Date.now() / 1000);
    return change;
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

  // -- the client list: filtered, sorted, and only its visible rows in the page ----------

  const list = $("clients");
  const view = $("clients-view");
  const search = $("client-search");
  const sortBy = $("client-sort");
  let order = []; // the clients listed, in order
  const rendered = new Map(); // client_id -> row now in the page
  let orderedAt = -Infinity;
  let orderTimer = 0;

  // Under a stream of updates the order is rebuilt at most this often (sorting 10,000
  // clients takes a few ms); the rows on screen are updated in the frame their record comes.
  const ORDER_MS = 250;

  function rebuildSoon() {
    if (orderTimer) return;
    const wait = orderedAt + ORDER_MS - performance.now();
    if (wait <= 0) return rebuildOrder();
    orderTimer = setTimeout(rebuildOrder, wait);
  }

  const byId = (a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  const timeOf = (client) => (finite(client.record.time) ? client.record.time : -Infinity);
  const byRecent = (a, b) => timeOf(b) - timeOf(a) || byId(a, b);

  function rebuildOrder() {
    clearTimeout(orderTimer);
    orderTimer = 0;
    orderedAt = performance.now();
    const query = search.value.trim().toLowerCase();
    for (const client of order) client.index = -1;
    order = [];
    for (const client of clients.values()) {
      if (!query || client.key.includes(query)) order.push(client);
    }
    order.sort(sortBy.value === "recent" ? byRecent : byId);
    order.forEach((client, i) => (client.index = i));
    list.style.height = `${order.length * ROW_PX}px`;
    const matches = $("clients-matches");
    matches.hidden = !query;
    matches.textContent = `${order.length} of ${clients.size} match`;
    renderRows();
  }

  function renderRows() {
    const top = view.scrollTop;
    const first = Math.max(0, Math.floor(top / ROW_PX) - OVERSCAN);
    const last = Math.min(order.length, Math.ceil((top + view.clientHeight) / ROW_PX) + OVERSCAN);
    const spare = [];
    for (const [id, row] of rendered) {
      const index = clients.get(id)?.index ?? -1;
      if (index < first || index >= last) {
        spare.push(row);
        rendered.delete(id);
      }
    }
    const now = Date.now() / 1000;
    const rows = [];
    for (let i = first; i < last; i++) {
      const client = order[i];
      let row = rendered.get(client.id);
      if (!row) {
        row = spare.pop() || newRow();
        rendered.set(client.id, row);
        fillRow(row, client, now);
      }
      row.li.style.transform = `translateY(${i * ROW_PX}px)`;
      rows.push(row.li);
    }
    for (const row of spare) row.li.remove();
    // Keep the rows in page order too: Tab moves through them as they are shown.
    if (rows.some((li, i) => list.children[i] !== li) || list.children.length !== rows.length) {
      const focused = document.activeElement?.closest?.("#clients li")?.dataset.clientId;
      list.replaceChildren(...rows);
      if (focused !== undefined) rendered.get(focused)?.button.focus({ preventScroll: true });
    }
  }

  function newRow() {
    const li = el("li");
    const button = el("button", "client");
    button.type = "button";
    const name = el("span", "name");
    const display = el("span", "display");
    const server = el("span", "server");
    const age = el("span", "age");
    // The device's name as the phone sent it, and what else it said (battery, accuracy, ...).
    const details = el("span", "details");
    const head = el("span", "line");
    // The phone's own name, where it gave one, leads: IDs made from names are long.
    head.append(display, name);
    const tail = el("span", "line");
    tail.append(server, details);
    button.append(head, age, tail);
    li.append(button);
    return { li, button, name, display, server, age, details, id: null };
  }

  function fillRow(row, client, now) {
    const record = client.record;
    const attributes = record.attributes || {};
    row.id = client.id;
    row.li.dataset.clientId = client.id;
    row.name.textContent = client.id;
    row.name.title = client.id;
    row.display.textContent = typeof attributes.name === "string" ? attributes.name : "";
    row.server.textContent = `via ${record.server}`;
    row.details.textContent = summary(attributes);
    row.li.classList.toggle("alarm", Boolean(attributes.alarm));
    const on = client.id === selected;
    row.li.classList.toggle("selected", on);
    row.button.setAttribute("aria-pressed", String(on));
    refreshAge(row, record, now);
  }

  function refreshAge(row, record, now) {
    const time = record.time; // null when the gateway cannot show it
    const known = finite(time) && time >= 0 && time <= MAX_TIME_S;
    const seconds = known ? Math.max(0, now - time) : NaN;
    row.age.textContent = formatAge(seconds);
    row.age.title = known ? formatDate(time) : "";
    row.li.classList.toggle("stale", !(seconds <= STALE_S));
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

  // Only the rows on screen show an age, so only they are rewritten each second.
  setInterval(() => {
    const now = Date.now() / 1000;
    for (const row of rendered.values()) {
      const client = clients.get(row.id);
      if (client) refreshAge(row, client.record, now);
    }
  }, 1000);

  let scrolled = 0;
  view.addEventListener("scroll", () => {
    if (!scrolled) scrolled = requestAnimationFrame(() => ((scrolled = 0), renderRows()));
  });
  search.addEventListener("input", () => {
    view.scrollTop = 0;
    rebuildOrder();
  });
  sortBy.addEventListener("change", rebuildOrder);
  list.addEventListener("click", (event) => {
    const id = event.target.closest("li")?.dataset.clientId;
    if (id !== undefined) select(id);
  });

  // Enter in the search selects the first match; arrows move through the list.
  search.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && order.length) {
      event.preventDefault();
      select(order[0].id);
    } else if (event.key === "ArrowDown" && order.length) {
      event.preventDefault();
      focusRow(0);
    }
  });
  list.addEventListener("keydown", (event) => {
    const id = event.target.closest("li")?.dataset.clientId;
    const index = clients.get(id)?.index ?? -1;
    const moves = { ArrowDown: 1, ArrowUp: -1, PageDown: 10, PageUp: -10 };
    if (index < 0) return;
    let to = index + (moves[event.key] ?? 0);
    if (event.key === "Home") to = 0;
    if (event.key === "End") to = order.length - 1;
    if (to === index) return;
    event.preventDefault();
    if (to < 0) return search.focus();
    focusRow(Math.min(to, order.length - 1));
  });

  function focusRow(index) {
    reveal(index);
    rendered.get(order[index].id)?.button.focus({ preventScroll: true });
  }

  // Scroll the list just enough that row ``index`` is in view, and draw it.
  function reveal(index) {
    const top = index * ROW_PX;
    if (top < view.scrollTop) view.scrollTop = top;
    else if (top + ROW_PX > view.scrollTop + view.clientHeight) {
      view.scrollTop = top + ROW_PX - view.clientHeight;
    }
    renderRows();
  }

  // -- selection, links to a client, and nearby places ----------------------------------

  const placeLayer = L.layerGroup().addTo(map);
  let selected = null;
  let nextCommand = 1;
  let nearbyCommand = null; // the id of the one nearby reply we still want
  let nearbyRadius = null;
  // The client a link (/#client=<id>) asks for, until it has been seen.
  let wanted = clientInHash();

  function clientInHash() {
    const match = /^#client=(.+)$/.exec(location.hash);
    if (!match) return null;
    try {
      return decodeURIComponent(match[1]);
    } catch (_) {
      return null; // not percent-encoded UTF-8: no client
    }
  }

  window.addEventListener("hashchange", () => {
    const id = clientInHash();
    if (id === null || id === selected) return;
    if (clients.has(id)) select(id);
    else wanted = id;
  });

  function select(id) {
    if (selected && clients.has(selected)) mark(clients.get(selected), false);
    selected = id;
    followAll = false;
    const client = clients.get(id);
    const link = `#client=${encodeURIComponent(id)}`;
    history.replaceState(null, "", `${location.pathname}${location.search}${link}`);
    trails.select(id);
    if (client) {
      mark(client, true);
      map.setView(client.marker.getLatLng(), Math.max(map.getZoom(), 11));
      if (client.index >= 0) reveal(client.index);
    }
    askNearby();
  }

  function mark(client, on) {
    const row = rendered.get(client.id);
    if (row) {
      row.li.classList.toggle("selected", on);
      row.button.setAttribute("aria-pressed", String(on));
    }
    const marker = client.marker;
    // The selected pin is out of the clusters, over every other pin.
    if (on) {
      clusters.removeLayer(marker);
      marker.setStyle(PIN_SELECTED).setRadius(PIN_SELECTED.radius);
      selectedLayer.addLayer(marker);
    } else {
      selectedLayer.removeLayer(marker);
      marker.setStyle(PIN).setRadius(PIN.radius);
      clusters.addLayer(marker);
    }
    trails.restyle(client.id, on ? TRAIL_SELECTED : TRAIL);
  }

  // -- a hook for tests and benchmarks (read-only; docs/gateway.md) -----------------------

  window.herdMap = Object.freeze({
    // Where a client's pin is: drawn (on its own or in a cluster), shown on its own, visible
    // (shown inside the map's view), selected, and where its head is in the page (to click
    // it), and the position it shows (during a replay, where the client was); null for no
    // such client.
    markerOf(id) {
      const client = clients.get(id);
      if (!client) return null;
      const marker = client.marker;
      const shown = Boolean(marker._map);
      const at = marker.getLatLng();
      const point = map.latLngToContainerPoint(at).subtract([0, 2 * marker.getRadius()]);
      const box = map.getContainer().getBoundingClientRect();
      const inside = point.x >= 0 && point.y >= 0 && point.x <= box.width && point.y <= box.height;
      return {
        id,
        drawn: shown || clusters.hasLayer(marker),
        shown,
        visible: shown && inside && !map._animatingZoom,
        selected: id === selected,
        lat: at.lat,
        lon: at.lng,
        x: box.left + point.x,
        y: box.top + point.y,
      };
    },
    // What the map shows now: clusters, single pins, and the clients they hold in all.
    shown() {
      let clustered = 0;
      let pins = selectedLayer.getLayers().length;
      let total = pins;
      clusters._featureGroup.eachLayer((layer) => {
        if (layer instanceof L.MarkerCluster) {
          clustered += 1;
          total += layer.getChildCount();
        } else {
          pins += 1;
          total += 1;
        }
      });
      return { clusters: clustered, pins, total, clients: clients.size, listed: order.length };
    },
    // A client's trail: its points [lat, lon, t] oldest first (a copy) and whether its line
    // is on the map; null for a client with none.
    trailOf(id) {
      const points = trails.pointsOf(id);
      return points && { points: points.map((p) => [...p]), drawn: trails.drawn(id) };
    },
    // The trails' loads and window, and the replay's state (static/trails.js, replay.js).
    history: () => ({ ...trails.state(), replay: replay.state() }),
  });

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

  // -- history: trails, their window, the replay (static/trails.js, static/replay.js) -----

  const trails = HerdTrails.create({
    map,
    renderer: trailRenderer,
    styleOf: (id) => (id === selected ? TRAIL_SELECTED : TRAIL),
    shown: (id) => Boolean(clients.get(id)?.marker._map),
  });
  const replay = HerdReplay.create({
    trails,
    place(id, lat, lon) {
      const marker = clients.get(id)?.marker;
      const at = marker?.getLatLng();
      if (at && (at.lat !== lat || at.lng !== lon)) marker.setLatLng([lat, lon]);
    },
    back() {
      for (const { marker, latlng } of clients.values()) {
        if (!marker.getLatLng().equals(latlng)) marker.setLatLng(latlng);
      }
    },
  });

  // -- the WebSocket ---------------------------------------------------------------------

  function connect() {
    // The first socket is the one static/socket.js opened as the page began to load.
    const early = window.herdEarlySocket;
    window.herdEarlySocket = null;
    if (early) {
      socket = early.socket;
    } else {
      const url = new URL("/api/v1/ws", location.href);
      url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
      socket = new WebSocket(url);
    }
    socket.addEventListener("message", (event) => receive(event.data));
    socket.addEventListener("close", closed);
    if (early) {
      const missed = early.messages;
      early.messages = null;
      for (const data of missed) receive(data);
      if (early.closed) closed(); // before its close event had this listener
    }
  }

  function receive(data) {
    try {
      handle(JSON.parse(data));
    } catch (err) {
      console.warn("message not handled:", err);
    }
  }

  function closed() {
    setConnection("reconnecting");
    // Jitter so that many pages do not all come back in the same instant.
    setTimeout(connect, backoff * (0.5 + Math.random() / 2));
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
  }

  function handle(message) {
    switch (message.type) {
      case "snapshot":
        backoff = BACKOFF_MIN_MS;
        setConnection("live");
        for (const record of message.records) queue(record);
        flush(); // now, not at the next frame: the map shows nothing else until it is
        if (selected) askNearby();
        break;
      case "update":
        queue(message.record);
        break;
      case "event": // an alarm or a region transition: the update shows it in the list
        if (message.event && message.event.point) queue(message.event.point);
        break;
      case "late": // points kept in history, older than their client's newest: trails only
        if (Array.isArray(message.records)) trails.late(message.records);
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
