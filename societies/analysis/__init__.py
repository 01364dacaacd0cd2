"""From records to findings: social measures, statistics, frames, figures, the HTML report.

Records are the only input here: nothing in this package imports the engine or a backend.
pandas, scipy and matplotlib (the ``report`` extra) are imported only by the modules that
need them.
"""
