"""ESC/POS thermal printer driver: codec (pure), device (status, check, test page), test page.

Importing this package does not import python-escpos (about 11 MB RSS); only a raster QR
code on the test page does.
"""

from .codec import PrinterStatus
from .device import Printer, assess
from .profile import PrinterProfile, load_profile

__all__ = ["Printer", "PrinterProfile", "PrinterStatus", "assess", "load_profile"]
