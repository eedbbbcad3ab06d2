"""HTML reports: one plan on one GPU, and the hardware comparison across GPUs.

`model.py` builds the report's data from artifacts only (a `PlanReport` / `ComparisonReport`),
`charts.py` draws it (Plotly), `render.py` renders templates/ with every user string escaped.
"""
