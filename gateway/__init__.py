"""The HTTP, phone-app and WebSocket gateway to the herd."""
