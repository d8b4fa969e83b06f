"""The training stage: the LightningModule, its command line, callbacks and run bookkeeping."""
