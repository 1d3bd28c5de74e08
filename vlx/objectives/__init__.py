"""vlx.objectives"""
