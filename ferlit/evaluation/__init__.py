"""The predict stage: predictions, scores, smoothing, plots and ABAW submission files."""
