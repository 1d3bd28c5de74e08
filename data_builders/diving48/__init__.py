"""diving48: Diving48 V2 dive classification (manual download)."""
