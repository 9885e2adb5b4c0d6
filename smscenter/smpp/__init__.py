"""The SMPP door: the partner server and its handler, upstream connectors, the link, bind guards."""
