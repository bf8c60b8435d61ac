"""The engineers' diagnostic console on a serial/USB port: frames (framing.py), credentials
checked offline (credentials.py), commands (commands.py), the audit trail (audit.py) and the
service thread the agent starts (service.py). See docs/console.md."""

from .service import Console

__all__ = ["Console"]
