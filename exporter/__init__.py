"""mtaq-exporter agent: configuration, CLI, HTTP server, scheduling, metric registry, actions."""

__version__ = "0.1.0"
