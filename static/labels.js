// Place labels for the map: offline there are no tiles, only country outlines, so at street
// zoom a trail would have no context. After each move the map asks the gateway which places
// to label in its view (GET /api/v1/places: at most 64, most important first) and draws them
// in a pane under the trails and pins, each name as a text node, dropping any label that would
// overlap a more important one. While a tile layer is on the map its own labels are enough,
// and these are hidden.
//
// Loaded after Leaflet and before static/map.js: the hook below labels every map made after it
// (L.map(..., {placeLabels: false}) opts out).
"use strict";

(() => {
  const DEBOUNCE_MS = 150; // after the last move: a drag or a wheel zoom asks once
  const GAP_PX = 3; // kept clear around each label
  const MAX_VIEW_PX = 8192; // the gateway's bound on a view's width and height (gateway/rules.py)
  const MAJOR = 1000000; // people: a city labelled larger
  const TOWN = 20000; // people: below it, a town labelled smaller
  const ATTRIBUTION = "Places: GeoNames (CC BY 4.0), airports: mwgg/Airports (MIT)";

  L.Map.addInitHook(function () {
    if (this.options.placeLabels === false) return;
    this.whenReady(() => placeLabels(this));
  });

  function placeLabels(map) {
    // Above the basemap (150) and tiles (200), under trails (390), places (400) and pins.
    map.createPane("labels").style.zIndex = 380;
    const layer = L.layerGroup([], { pane: "labels", attribution: ATTRIBUTION });
    let tileLayers = 0;
    let pending = null; // the request in flight, aborted when the view moves again
    let timer = 0;

    map.eachLayer((other) => (tileLayers += other instanceof L.TileLayer ? 1 : 0));
    map.on("layeradd layerremove", (event) => {
      if (!(event.layer instanceof L.TileLayer)) return;
      tileLayers += event.type === "layeradd" ? 1 : -1;
      schedule();
    });
    map.on("movestart", () => pending?.abort());
    map.on("moveend resize", schedule);
    schedule();

    function schedule() {
      pending?.abort();
      clearTimeout(timer);
      timer = setTimeout(refresh, DEBOUNCE_MS);
    }

    async function refresh() {
      if (tileLayers > 0) {
        layer.remove();
        return;
      }
      layer.addTo(map);
      const size = map.getSize();
      if (!size.x || !size.y) return;
      const center = map.getCenter();
      const lon = L.Util.wrapNum(center.lng, [-180, 180], true);
      const query = new URLSearchParams({
        lat: Math.max(-90, Math.min(90, center.lat)).toFixed(6),
        lon: lon.toFixed(6),
        zoom: String(map.getZoom()),
        width: String(Math.min(size.x, MAX_VIEW_PX)),
        height: String(Math.min(size.y, MAX_VIEW_PX)),
      });
      const request = new AbortController();
      pending = request;
      try {
        const response = await fetch(`/api/v1/places?${query}`, { signal: request.signal });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const answer = await response.json();
        if (!request.signal.aborted) draw(answer.places, center.lng);
      } catch (err) {
        if (err.name !== "AbortError") console.warn("place labels not loaded:", err);
      } finally {
        if (pending === request) pending = null;
      }
    }

    function draw(places, centerLng) {
      layer.clearLayers();
      const labels = places.map((place) => {
        // The copy of the place nearest the view's centre: a view across the antimeridian
        // has its centre past 180° on one side.
        const lng = place.lon + 360 * Math.round((centerLng - place.lon) / 360);
        const text = document.createElement("span");
        text.className = `place-label ${labelClass(place)}`;
        text.textContent = place.name;
        text.dataset.placeId = place.id;
        const marker = L.marker([place.lat, lng], {
          pane: "labels",
          interactive: false,
          keyboard: false,
          icon: L.divIcon({ className: "place-label-anchor", html: text, iconSize: null }),
        });
        layer.addLayer(marker);
        return { marker, text };
      });
      // Measured once all are in the page (one layout), most important first: a label that
      // would cover one kept already goes.
      const boxes = labels.map(({ text }) => text.getBoundingClientRect());
      const kept = [];
      labels.forEach(({ marker }, i) => {
        if (kept.some((box) => overlaps(boxes[i], box))) layer.removeLayer(marker);
        else kept.push(boxes[i]);
      });
    }
  }

  function labelClass(place) {
    if (place.kind === "airport") return "airport";
    if (place.population >= MAJOR) return "major";
    return place.population >= TOWN ? "city" : "town";
  }

  function overlaps(a, b) {
    return (
      a.left < b.right + GAP_PX &&
      b.left < a.right + GAP_PX &&
      a.top < b.bottom + GAP_PX &&
      b.top < a.bottom + GAP_PX
    );
  }
})();
