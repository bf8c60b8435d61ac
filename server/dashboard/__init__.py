"""Web dashboard served by the fleet server at ``/dashboard/`` (issue 7); see docs/dashboard.md."""
