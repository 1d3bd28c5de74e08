"""tgif_qa: TGIF-QA action / transition / frameqa (manual download)."""
