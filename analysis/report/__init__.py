"""The reports: a report of runs (`report`, with its `summary`, `sections` and `figures`), the paper's `claims`
beside a report's numbers, markdown helpers (`markdown`) and the HTML rendering (`md_html`).
`gradvar report` is registered in analysis.cli."""
