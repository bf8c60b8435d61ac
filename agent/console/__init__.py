"""The engineers' diagnostic console on a serial/USB port: credentials checked offline (credentials.py),
commands (commands.py), the audit trail (audit.py) and the service thread the agent starts (service.py); its
frames are wire/console.py, shared with the laptop side (posfleet/diagconsole). See docs/console.md."""

from .service import Console

__all__ = ["Console"]
