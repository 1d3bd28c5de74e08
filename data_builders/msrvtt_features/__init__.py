"""msrvtt_features: the EAO authors' released MSR-VTT feature pickles (manual download)."""
