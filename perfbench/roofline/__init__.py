"""Roofline analysis: analytical FLOPs/bytes per operator, measured ceilings, measured positions.

Analytical tools predict without measuring and measuring tools measure without explaining;
perfbench does both on the same workload. `analytical` counts, `calibrate` measures the machine's
own ceilings, `place` puts stored runs on the roof and splits their latency, `plots` draws it.
"""
