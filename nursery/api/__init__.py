"""Transports: REST, /ws, health and metrics. They translate; the service layer decides."""
