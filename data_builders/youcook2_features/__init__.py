"""youcook2_features: the EAO authors' released YouCook2 feature pickles (manual download)."""
