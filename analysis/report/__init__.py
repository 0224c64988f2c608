"""The reports: a report of runs (`report`, with its `summary`, `sections` and `figures`), the study's report
(`study_report`, with the paper's `claims`), markdown helpers (`markdown`) and the HTML rendering (`md_html`).
`gradvar report` is registered in analysis.cli."""
