"""Experiment configs: `configs/<family>_<task>.py:get_config(arg)`."""
