"""ferlit's sample data: drawn faces written in the Aff-Wild2 and ExpW layouts."""
