"""One reader per data source behind one interface (``base.Reader``, made by ``create_reader``):
Aff-Wild2, ExpW and unlabelled frame folders, each its index, its cache key and how to load a face."""
