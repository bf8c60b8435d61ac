"""The laptop side of the engineers' diagnostic console (agent/console/ is the terminal side).

``client``: the framed protocol over a serial port; ``render``: tables for people;
``shell``: ``posfleet diag connect``; ``remote``: ``posfleet diag remote``;
``credential``: ``posfleet diag credential issue|revoke`` on the fleet CA's host.
"""
