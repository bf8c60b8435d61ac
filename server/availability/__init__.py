"""Availability on the server: roll-ups kept as samples arrive, the service that answers from them, the API.
The counting rule itself (service hours and the pure counter the contract is paid on) is the package
:mod:`counting`, shared with the simulator's oracle."""
