"""youcook2: YouCook2 recipe-step caption segments (manual download)."""
