"""trm-edge subsystem."""
