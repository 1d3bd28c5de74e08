"""howto100m: narrated instructional videos cut into captioned segments."""
