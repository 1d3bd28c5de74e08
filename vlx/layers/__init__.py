"""vlx.layers"""
