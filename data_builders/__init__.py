"""TFDS builders of the datasets vlx reads (one folder per dataset)."""
