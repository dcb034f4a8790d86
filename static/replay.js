// The replay of the trails' window: play, pause, speed and a slider to scrub over the window,
// moving each client's pin along its trail to where it was at the replay's time (between two
// points, on the straight line between them, in proportion to time). "Live" ends it: the pins
// go back to each client's newest record. static/map.js creates it (HerdReplay.create).
"use strict";

window.HerdReplay = (() => {
  const STEPS = 1000; // the slider's steps over the window

  const $ = (id) => document.getElementById(id);

  // Where a trail ([lat, lon, t] oldest first) was at time t: before its first point at
  // that point, after its last at that one (a pin never leaves its trail).
  function positionAt(points, t) {
    const at = HerdTrails.after(points, t);
    if (at === 0) return points[0];
    if (at === points.length) return points[at - 1];
    const [lat0, lon0, t0] = points[at - 1];
    const [lat1, lon1, t1] = points[at];
    const f = t1 > t0 ? (t - t0) / (t1 - t0) : 1;
    // The short way round: across the antimeridian, not back across the world.
    let dlon = lon1 - lon0;
    if (dlon > 180) dlon -= 360;
    else if (dlon < -180) dlon += 360;
    let lon = lon0 + f * dlon;
    if (lon > 180) lon -= 360;
    else if (lon < -180) lon += 360;
    return [lat0 + f * (lat1 - lat0), lon];
  }

  // Local time to the second: "2026-05-01 14:03:12".
  function clockText(t) {
    const date = new Date(t * 1000);
    if (Number.isNaN(date.getTime())) return "";
    const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
    return local.toISOString().slice(0, 19).replace("T", " ");
  }

  function create({ trails, place, back }) {
    const play = $("replay-play");
    const live = $("replay-live");
    const speed = $("replay-speed");
    const slider = $("replay-time");
    const clock = $("replay-clock");
    let time = null; // the replay's time in POSIX seconds; null: live
    let playing = false;
    let frame = 0;
    let last = 0; // performance.now() at the last frame

    function show() {
      trails.each((id, points) => {
        if (points.length) {
          const [lat, lon] = positionAt(points, time);
          place(id, lat, lon);
        }
      });
      const { since, until } = trails.range();
      slider.value = String(Math.round(((time - since) / (until - since)) * STEPS));
      const text = clockText(time);
      if (clock.textContent !== text) {
        clock.textContent = text;
        slider.setAttribute("aria-valuetext", text);
      }
    }

    function tick(now) {
      frame = 0;
      if (!playing) return;
      const { until } = trails.range();
      time = Math.min(until, time + ((now - last) / 1000) * Number(speed.value));
      last = now;
      show();
      if (time >= until) pause();
      else frame = requestAnimationFrame(tick);
    }

    function start() {
      const { since, until } = trails.range();
      if (time === null || time >= until) time = since;
      playing = true;
      last = performance.now();
      live.disabled = false;
      play.textContent = "Pause";
      show();
      frame = requestAnimationFrame(tick);
    }

    function pause() {
      playing = false;
      cancelAnimationFrame(frame);
      frame = 0;
      play.textContent = "Play";
    }

    // Back to live: the pins show each client's newest record again.
    function stop() {
      pause();
      if (time === null) return;
      time = null;
      live.disabled = true;
      clock.textContent = "live";
      slider.value = String(STEPS);
      slider.setAttribute("aria-valuetext", "live");
      back();
    }

    play.addEventListener("click", () => (playing ? pause() : start()));
    live.addEventListener("click", stop);
    slider.addEventListener("input", () => {
      const { since, until } = trails.range();
      time = since + (Number(slider.value) / STEPS) * (until - since);
      live.disabled = false;
      last = performance.now();
      show();
    });
    // Escape anywhere in the replay's controls goes back to live.
    $("replay").addEventListener("keydown", (event) => event.key === "Escape" && stop());
    trails.onWindow(stop);
    // Trails loaded for a new view while the replay is paused: their pins join it.
    trails.onLoad(() => time !== null && show());

    return {
      active: () => time !== null,
      state: () => ({ playing, time, speed: Number(speed.value) }),
    };
  }

  return { create, positionAt };
})();
