"""Reporting: what the study's rows become for a reader.

``compare`` (paired comparisons of models), ``table`` (the tidy table), ``summary``
(the ranked summary, with the published numbers of ``published/``), ``figures``
(heatmaps, bar and radar charts), ``correlate`` (what goes with transfer across models)
and ``cost`` (where the time went). Nothing here imports torch: the report jobs start fast.
"""
