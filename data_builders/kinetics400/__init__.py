"""kinetics400: Kinetics-400 action recognition (manual download, CVDF mirror layout)."""
