"""Serving: the dashboard and the SQL API of `shoplake serve` (see docs/SERVING.md)."""
