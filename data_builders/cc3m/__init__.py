"""cc3m: Conceptual Captions 3M images as 1-frame videos."""
