"""The server's self-inspection and its Prometheus metrics (issue 17): :mod:`.service`, :mod:`.router`,
:mod:`.metrics`. The report (server/reports) reads :func:`server.inspection.service.inspect`."""
