"""ProAPO's LightningModule (``LitProAPO``)."""
