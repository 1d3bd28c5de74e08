"""ucf101: UCF101 action recognition, official splits 1-3 (manual download)."""
