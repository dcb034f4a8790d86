// The map's WebSocket, opened as the page starts to load: the snapshot of every client is on
// its way (and is encoded by the gateway) while Leaflet and static/map.js load. map.js takes
// the socket over, and the messages it missed, once it runs; a later socket is its own.
"use strict";

(() => {
  const url = new URL("/api/v1/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const early = { socket: new WebSocket(url), messages: [], closed: false };
  // Kept until map.js takes them (it sets messages to null): a message event with no
  // listener is lost.
  early.socket.addEventListener("message", (event) => early.messages?.push(event.data));
  early.socket.addEventListener("close", () => (early.closed = true));
  window.herdEarlySocket = early;
})();
