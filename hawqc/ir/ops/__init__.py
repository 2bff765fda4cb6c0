"""What hawqc knows about each op, in one place: how a node is keyed (`keys.py`), typed views of
its parameters, and the traits of op types. Passes, precision inference, both executor modes and
the hls4ml planner read ops through here, never through private readers of their attributes."""
