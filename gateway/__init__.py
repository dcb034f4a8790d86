"""The HTTP, phone-app and WebSocket gateway to the herd."""

# Importing the gateway installs its rules for the [gateway] section of every config loaded.
from . import settings as settings
