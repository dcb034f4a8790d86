// The map's trails from history: one polyline per client on the trails' canvas, loaded from
// GET /api/v1/trails for the clients in view, over a time window (the last N hours or from/to),
// simplified for the zoom, kept up to date by live records and late points (each put where it
// belongs in time). Also the window control and the selected client's GPX and GeoJSON links.
// static/map.js creates it (HerdTrails.create) and tells it what the map shows.
"use strict";

window.HerdTrails = (() => {
  const RELOAD_MS = 300; // pan/zoom settles this long before trails are asked again
  const FIRST_LOAD_MS = 1000;
  const PAD = 0.25; // the box asked for reaches this far past the view on each side
  // Web Mercator at 256 px tiles, as gateway/history/trails.py's metres_per_pixel.
  const MERCATOR_EQUATOR_M = 2 * Math.PI * 6378137;
  const MAX_LAT = 85.05112878;
  // A relative window's trail is trimmed once this share of its points fell out of it.
  const TRIM_SHARE = 0.125;
  const PRESETS = [1, 6, 24, 168]; // hours: the window's choices besides from/to
  const HOUR_S = 3600;

  const $ = (id) => document.getElementById(id);
  const finite = (value) => typeof value === "number" && Number.isFinite(value);

  function metresPerPixel(zoom, latitude) {
    const lat = Math.max(-MAX_LAT, Math.min(MAX_LAT, latitude));
    return (MERCATOR_EQUATOR_M * Math.cos((lat * Math.PI) / 180)) / (256 * 2 ** zoom);
  }

  // A point of a trail, [lat, lon, t], from a record as the gateway shows it; null if it has
  // no usable position or time.
  function pointOf(record) {
    const { lat, lon, time } = record;
    if (!(finite(lat) && finite(lon) && finite(time))) return null;
    if (Math.abs(lat) > 90 || Math.abs(lon) > 180) return null;
    return [lat, lon, time];
  }

  // The index at which a point of time ``t`` goes: after every point at or before it.
  function after(points, t) {
    let lo = 0;
    let hi = points.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (points[mid][2] <= t) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  // Points from the server, checked: usable numbers, oldest first (sorted if they were not).
  function cleanPoints(raw) {
    const points = [];
    let sorted = true;
    for (const p of Array.isArray(raw) ? raw : []) {
      if (!Array.isArray(p) || !finite(p[0]) || !finite(p[1]) || !finite(p[2])) continue;
      if (Math.abs(p[0]) > 90 || Math.abs(p[1]) > 180) continue;
      if (points.length && p[2] < points[points.length - 1][2]) sorted = false;
      points.push(p.length === 3 ? p : p.slice(0, 3)); // fresh from JSON: ours to keep
    }
    if (!sorted) points.sort((a, b) => a[2] - b[2]);
    return points;
  }

  // "/api/v1/clients/<id>/...": an ID may hold "/" (OwnTracks IDs do); each part is encoded.
  function clientPath(id) {
    return id.split("/").map(encodeURIComponent).join("/");
  }

  function create({ map, renderer, styleOf, shown }) {
    const section = $("history");
    const hours = Number(section.dataset.trailHours) || 24;
    // With history off ([history] enabled = false) the trails are what this page saw live.
    const enabled = section.dataset.history === "on";
    const trails = new Map(); // client_id -> {points: [[lat, lon, t]], line: L.Polyline | null}
    let loaded = null; // {box: L.LatLngBounds, zoom} of the last load
    let request = null; // the load in flight: {controller, extra: [[id, point]]}
    let timer = 0;
    const redraw = new Set(); // client_ids whose trails are drawn again at the next frame
    let redrawFrame = 0;
    const state = { loads: 0, loading: false, truncated: false, error: null };
    let selected = null;
    let windowChanged = () => {};
    let trailsLoaded = () => {};

    // -- the window ---------------------------------------------------------------------

    const choice = $("window");
    if (!PRESETS.includes(hours)) {
      // The configured trail_hours is a choice too, in its place among the presets.
      const options = [...choice.options];
      const later = options.find((o) => o.value === "custom" || Number(o.value) > hours);
      choice.add(new Option(`last ${hours} h`, String(hours)), later);
    }
    choice.value = String(hours);
    let custom = null; // {since, until} while a from/to window is shown
    let last = hours; // the hours of the window shown while it is not from/to

    // The window now: the last hours up to now (a trail request without until, so that it
    // takes every point up to the newest), or from/to.
    function range() {
      if (custom) return { ...custom, relative: false };
      const now = Date.now() / 1000;
      return { since: now - last * HOUR_S, until: now, relative: true };
    }

    function within(t) {
      const { since, until, relative } = range();
      return t >= since && (relative || t <= until);
    }

    choice.addEventListener("change", () => {
      $("window-custom").hidden = choice.value !== "custom";
      if (choice.value === "custom") {
        const { since, until } = range();
        if (!$("window-from").value) $("window-from").value = localInput(since);
        if (!$("window-to").value) $("window-to").value = localInput(until);
        return; // shown once from/to are given
      }
      custom = null;
      last = Number(choice.value);
      reset();
    });

    $("window-form").addEventListener("submit", (event) => {
      event.preventDefault();
      if (choice.value !== "custom") return reset();
      const since = Date.parse($("window-from").value) / 1000;
      const until = Date.parse($("window-to").value) / 1000;
      if (!(finite(since) && finite(until) && since < until)) {
        return status("Give a from time before the to time.", true);
      }
      custom = { since, until };
      reset();
    });

    // A datetime-local input's value (local time, to the second) for a POSIX time.
    function localInput(t) {
      const date = new Date(t * 1000);
      const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
      return local.toISOString().slice(0, 19);
    }

    // A new window: every trail is dropped, then loaded for the view again.
    function reset() {
      for (const trail of trails.values()) trail.line?.remove();
      trails.clear();
      loaded = null;
      load();
      windowChanged(range());
      links();
    }

    // -- loading ------------------------------------------------------------------------

    // The first load once the map has settled on the clients (the snapshot's fit is a move,
    // below), or after this long in any case.
    setTimeout(() => loaded || request || load(), FIRST_LOAD_MS);

    map.on("moveend", () => {
      clearTimeout(timer);
      timer = setTimeout(maybeLoad, RELOAD_MS);
    });

    // Only when the view left the box last loaded, or the zoom (so the detail) changed.
    function maybeLoad() {
      const view = map.getBounds();
      if (loaded && loaded.zoom === map.getZoom() && loaded.box.contains(view)) return;
      load();
    }

    // The bbox parameter for a box of the map (longitudes may run past ±180 there): west,
    // south, east, north in degrees within the globe, west after east across the
    // antimeridian; null for a box as wide as the world (every client's trail, then).
    function bboxParam(box) {
      const west = box.getWest();
      const east = box.getEast();
      if (east - west >= 360) return null;
      const wrap = (lon) => ((((lon + 180) % 360) + 360) % 360) - 180;
      const lat = (value) => Math.max(-90, Math.min(90, value));
      const corners = [wrap(west), lat(box.getSouth()), wrap(east), lat(box.getNorth())];
      return corners.map((value) => value.toFixed(6)).join(",");
    }

    async function load() {
      if (!enabled) return report();
      request?.controller.abort();
      const mine = { controller: new AbortController(), extra: [] };
      request = mine;
      const { since, until, relative } = range();
      const box = map.getBounds().pad(PAD);
      const zoom = map.getZoom();
      // A pixel's worth of ground at this zoom: what the simplified trail may differ by.
      const metres = Math.max(0.01, metresPerPixel(zoom, map.getCenter().lat));
      const query = new URLSearchParams({ since: since.toFixed(3), simplify: metres.toFixed(2) });
      if (!relative) query.set("until", until.toFixed(3));
      const bbox = bboxParam(box);
      if (bbox) query.set("bbox", bbox);
      state.loading = true;
      try {
        const response = await fetch(`/api/v1/trails?${query}`, {
          cache: "no-store",
          signal: mine.controller.signal,
        });
        const body = await response.json().catch(() => null);
        if (!response.ok) throw new Error(problem(response.status, body));
        if (request !== mine) return;
        apply(body, mine.extra);
        loaded = { box, zoom };
        trailsLoaded();
        state.error = null;
        state.truncated = Boolean(body.truncated);
      } catch (err) {
        if (err.name === "AbortError" || request !== mine) return;
        state.error = err.message;
      } finally {
        if (request === mine) {
          request = null;
          state.loading = false;
          state.loads += 1;
          report();
        }
      }
    }

    function problem(code, body) {
      if (code === 503) return "history is off on this herd or no server answered";
      return `HTTP ${code}${body?.error?.message ? `: ${body.error.message}` : ""}`;
    }

    // A reply's trails replace the ones held for those clients; the points that came live
    // while it was on its way are put back in (by place, not insert: insert would keep each
    // aside again in the very list being walked, which then never ends).
    function apply(body, extra) {
      for (const trail of Array.isArray(body?.trails) ? body.trails : []) {
        if (!trail || typeof trail.client_id !== "string") continue;
        const points = cleanPoints(trail.points);
        const held = trails.get(trail.client_id);
        if (held) held.points = points;
        else trails.set(trail.client_id, { points, line: null });
        draw(trail.client_id);
      }
      for (const [id, point] of extra) place(id, point);
    }

    // -- live records and late points ------------------------------------------------------

    // A point that came live or late, into its client's trail; kept aside too while a load
    // is on its way, whose answer will replace the trail.
    function insert(id, point) {
      if (!within(point[2])) return;
      if (request) request.extra.push([id, point]);
      place(id, point);
    }

    // A point into its client's trail at its time (once: a copy of a point held is skipped).
    function place(id, point) {
      let trail = trails.get(id);
      if (!trail) trails.set(id, (trail = { points: [], line: null }));
      const points = trail.points;
      const at = after(points, point[2]);
      for (let i = at - 1; i >= 0 && points[i][2] === point[2]; i--) {
        if (points[i][0] === point[0] && points[i][1] === point[1]) return;
      }
      points.splice(at, 0, point);
      if (at === points.length - 1 && trail.line && !redraw.has(id)) {
        trail.line.addLatLng(point); // the usual case: the newest point, at the end
        trim(id, trail);
      } else {
        drawSoon(id);
      }
    }

    // A trail whose points changed other than at its end is drawn again at the next frame,
    // once: a phone's queue comes as a late point a message, and redrawing a long trail for
    // each (setLatLngs re-projects every point) kept the page busy for seconds.
    function drawSoon(id) {
      redraw.add(id);
      if (!redrawFrame) redrawFrame = requestAnimationFrame(drawChanged);
    }

    function drawChanged() {
      redrawFrame = 0;
      for (const id of redraw) draw(id);
      redraw.clear();
    }

    // Points that fell out of a relative window leave in one go, not one by one.
    function trim(id, trail) {
      const points = trail.points;
      const probe = points[Math.floor(points.length * TRIM_SHARE)];
      const { since } = range();
      if (probe && probe[2] < since) {
        trail.points = points.filter((p) => p[2] >= since);
        drawSoon(id);
      }
    }

    // The polyline of a client's trail made, updated, shown or hidden as its points and
    // its pin say: a line of two points or more, drawn while its client's own pin is.
    function draw(id) {
      const trail = trails.get(id);
      if (!trail) return;
      if (trail.points.length < 2) {
        trail.line?.remove();
        trail.line = null;
        return;
      }
      if (!trail.line) {
        trail.line = L.polyline([], { ...styleOf(id), renderer, interactive: false });
      }
      trail.line.setLatLngs(trail.points);
      if (shown(id)) trail.line.addTo(map);
    }

    // -- what the side panel says ----------------------------------------------------------

    function status(text, isError) {
      const node = $("trails-status");
      node.textContent = text;
      node.classList.toggle("error", isError);
    }

    function counts() {
      let points = 0;
      let lines = 0;
      for (const trail of trails.values()) {
        points += trail.points.length;
        if (trail.line) lines += 1;
      }
      return { points, lines };
    }

    function report() {
      const { points, lines } = counts();
      if (!enabled) {
        return status("History is off on this herd: trails show what this page saw live.", false);
      }
      if (state.error) return status(`Trails not loaded (${state.error}).`, true);
      const cut = state.truncated ? " (cut short: zoom in for the rest)" : "";
      const many = `${points.toLocaleString("en")} points`;
      status(`${lines} ${lines === 1 ? "trail" : "trails"}, ${many}${cut}`, false);
    }

    // The selected client's history in the window, as GPX and GeoJSON files. Plain links:
    // the page's own authorisation (the HttpOnly cookie /?token= set) goes with them, and the
    // browser writes the file as it streams in.
    function links() {
      const box = $("downloads");
      box.hidden = selected === null || !enabled;
      if (selected === null) return;
      $("downloads-client").textContent = selected;
      const { since, until, relative } = range();
      const name = selected.replace(/[^A-Za-z0-9._-]+/g, "_") || "client";
      for (const [format, suffix] of [
        ["gpx", "gpx"],
        ["geojson", "geojson"],
      ]) {
        const query = new URLSearchParams({ format, since: since.toFixed(3) });
        if (!relative) query.set("until", until.toFixed(3));
        const link = $(`download-${format}`);
        link.href = `/api/v1/clients/${clientPath(selected)}/history?${query}`;
        link.download = `${name}.${suffix}`;
      }
    }
    // A relative window moves on: the links are brought up to now as they are followed.
    for (const id of ["download-gpx", "download-geojson"]) $(id).addEventListener("click", links);

    return {
      live(record) {
        const point = pointOf(record);
        if (point) insert(record.client_id, point);
      },
      late(records) {
        for (const record of records) {
          const point = record && typeof record.client_id === "string" ? pointOf(record) : null;
          if (point) insert(record.client_id, point);
        }
        report();
      },
      show(id) {
        const line = trails.get(id)?.line;
        if (line) line.addTo(map);
      },
      hide(id) {
        trails.get(id)?.line?.remove();
      },
      restyle(id, style) {
        trails.get(id)?.line?.setStyle(style);
      },
      select(id) {
        selected = id;
        links();
      },
      load,
      range,
      // Each client's trail points, [lat, lon, t] oldest first (not to be changed).
      each(fn) {
        for (const [id, trail] of trails) fn(id, trail.points);
      },
      pointsOf: (id) => trails.get(id)?.points ?? null,
      drawn: (id) => Boolean(trails.get(id)?.line?._map),
      state: () => ({ ...state, ...range(), ...counts(), trails: trails.size }),
      onWindow(fn) {
        windowChanged = fn;
      },
      onLoad(fn) {
        trailsLoaded = fn;
      },
    };
  }

  return { create, metresPerPixel, after };
})();
