"""The study's statistics: the LR-grid tables (`lr_grid`), LR-sensitivity outcomes (`lr_sensitivity`), the causal
branches' outcomes (`causal`) and run-level bootstrap intervals (`bootstrap`)."""
