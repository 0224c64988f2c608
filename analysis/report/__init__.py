"""The reports: a report of runs (`report`, with its `summary`, `sections` and `figures`), markdown helpers
(`markdown`) and the HTML rendering (`md_html`). `gradvar report` is registered in analysis.cli."""
