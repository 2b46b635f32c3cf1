"""Collectors: one module per source, plus the shared parsing and classification beside them."""
