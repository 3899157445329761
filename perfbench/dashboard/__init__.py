"""The Dash dashboard (`perfbench dashboard`) and the self-contained HTML report (`perfbench report`).

Layout: `source.py` opens the results store read-only, once per request; `data.py` is the shared data
layer (runs, points, filters) every page draws on; `style.py` holds colours and axes shared by all
figures; `urlstate.py` carries filters and selections in the URL; `pages/<name>.py` is one page each
(a `layout(**query)` for Dash's pages mechanism, its callbacks, and `report_figures` for the HTML
report). Nothing here writes to the store.

Dash and plotly are imported only by this package (the `dashboard` extra).
"""
