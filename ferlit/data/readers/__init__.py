"""One reader per data source: Aff-Wild2 and ExpW (each its index and how to load a face)."""
