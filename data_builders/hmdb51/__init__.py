"""hmdb51: HMDB51 action recognition, official 70/30 splits 1-3 (manual download)."""
