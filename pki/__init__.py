"""The fleet's PKI: the fleet CA (certificates for terminals, the server and the broker; the CRL), and the broker
configuration and ACL generated from what it issued (:mod:`pki.ca`).

Its own package, on a floor below all of its users: the ``posfleet ca ...`` commands, the demo and the diagnostic
console's engineer credentials (``posfleet/``), the simulator's local fleet (``simulator/``) and the tests. It imports
only :mod:`wire` (topic names, what a terminal SN is) and ``cryptography``.
"""
