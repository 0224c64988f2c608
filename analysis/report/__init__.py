"""The reports: a report of runs (`report`, its `summary` and `sections`, `figures`), the study's report
(`study_report`, with the paper's `claims`), markdown helpers and the HTML rendering (`md_html`); `cli` registers
`gradvar report`."""
