"""The study's report, built on analysis' report helpers (markdown, figure style, HTML rendering)."""
